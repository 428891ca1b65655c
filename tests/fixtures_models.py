"""Tiny, random, offline checkpoints in the real key layouts of each supported format.

Used by the model tests and by other tests that need a small encoder quickly:

    from tests.fixtures_models import write_bare_bert, write_stanford_bert, write_pylate_bert, write_jina_colbert

Every writer takes a target folder and returns it; weights are random (seeded) and tiny (hidden 32).
Tokenizers are trained on the fly (recipes of ../shared/reference/offline-fixtures.md).
"""
from __future__ import annotations

import json
import os
import string
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("LATERAGKIT_DATA", HERE.parents[0].parent / "shared" / "data"))

BERT_SPECIALS = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

ENGLISH_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "How do statins affect breast cancer survival?",
    "Late interaction models score every query token against every document token.",
    "Information retrieval systems rank documents by their relevance to a query.",
    "A library catalogue lists books, journals and technical reports.",
    "Hello, world! (a test) [x] {y} 'q' \"r\" #1 $2 %3 &4 *5 +6 -7 /8 :9 ;0 <a> =b @c \\d ^e _f `g |h ~i",
    "Punctuation: commas, periods. Questions? Exclamations! Semi-colons; colons: dashes - slashes /",
]

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def _save_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2), encoding="utf-8")


def save_weights(folder: Path, state: dict[str, torch.Tensor], how: str = "safetensors") -> None:
    """Write `state` as `model.safetensors`, `pytorch_model.bin` or a 2-shard safetensors index."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in state.items()}
    if how == "safetensors":
        save_file(state, str(folder / "model.safetensors"))
    elif how == "bin":
        torch.save(state, str(folder / "pytorch_model.bin"))
    elif how == "sharded":
        keys = sorted(state)
        halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
        weight_map = {}
        for i, part in enumerate(halves):
            name = f"model-0000{i + 1}-of-00002.safetensors"
            save_file({k: state[k] for k in part}, str(folder / name))
            weight_map.update({k: name for k in part})
        _save_json(folder / "model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})
    else:  # pragma: no cover
        raise ValueError(how)


# ------------------------------------------------------------------------------------------------ tokenizers

def write_wordpiece_tokenizer(folder: Path, texts: list[str] | None = None, vocab_size: int = 300) -> Path:
    """An uncased BERT WordPiece tokenizer with [PAD] [unused0] [unused1] [UNK] [CLS] [SEP] [MASK] = ids 0-6."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(texts or ENGLISH_TEXTS * 3, vocab_size=vocab_size, special_tokens=BERT_SPECIALS,
                           min_frequency=1, show_progress=False)
    wp.save_model(str(folder))
    tok = BertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=True, model_max_length=512)
    tok.save_pretrained(str(folder))
    return folder


def xquad_paragraphs(per_language: int = 12) -> list[str]:
    texts: list[str] = []
    for lang in ("en", "de", "zh", "ar"):
        path = DATA / "xquad" / lang / "corpus.jsonl"
        if path.is_file():
            with path.open(encoding="utf-8") as fh:
                for _, line in zip(range(per_language), fh, strict=False):  # first lines only
                    texts.append(json.loads(line)["text"])
    return texts


def write_unigram_tokenizer(folder: Path, texts: list[str] | None = None, vocab_size: int = 800) -> Path:
    """An XLM-R style sentencepiece (Unigram) tokenizer with [QueryMarker]/[DocumentMarker] added tokens."""
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaTokenizerFast

    texts = texts or (xquad_paragraphs() + ENGLISH_TEXTS * 3)
    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                           unk_token="<unk>", show_progress=False)
    vocab = [(p, s) for p, s in json.loads(sp.to_str())["model"]["vocab"]]
    tok = XLMRobertaTokenizerFast(vocab=vocab, model_max_length=8194)
    tok.add_tokens(["[QueryMarker]", "[DocumentMarker]"], special_tokens=True)
    tok.save_pretrained(str(folder))
    return folder


def _copy_tokenizer(src: Path, dst: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(dst))


# ------------------------------------------------------------------------------------------------ BERT

def bert_config(vocab_size: int, **over: Any) -> Any:
    from transformers import BertConfig

    kw = dict(SMALL, vocab_size=vocab_size, max_position_embeddings=128, type_vocab_size=2, pad_token_id=0,
              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    kw.update(over)
    return BertConfig(**kw)


def random_bert_state(config: Any, seed: int = 0) -> dict[str, torch.Tensor]:
    """State dict of a randomly initialised `BertModel` (with pooler), keys without prefix."""
    from transformers import BertModel

    torch.manual_seed(seed)
    model = BertModel(config)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # LayerNorms away from the (1, 0) init, so that a swapped norm would show
    for k in state:
        if "LayerNorm" in k:
            state[k] = state[k] + 0.1 * torch.randn_like(state[k])
    return state


def _bert_folder(folder: Path, tokenizer_dir: Path | None, **over: Any) -> tuple[Any, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        write_wordpiece_tokenizer(folder)
    else:
        _copy_tokenizer(tokenizer_dir, folder)
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(str(folder)))
    return bert_config(vocab, **over), folder


def write_bare_bert(folder: Path, *, tokenizer_dir: Path | None = None, seed: int = 0, how: str = "safetensors",
                    **over: Any) -> Path:
    """A plain transformers BERT folder (no ColBERT head): config.json + weights + tokenizer."""
    config, folder = _bert_folder(folder, tokenizer_dir, **over)
    config.architectures = ["BertModel"]
    config.save_pretrained(str(folder))
    save_weights(folder, random_bert_state(config, seed), how)
    return folder


def write_stanford_bert(folder: Path, *, dim: int = 16, metadata: dict[str, Any] | None = None,
                        tokenizer_dir: Path | None = None, seed: int = 0, how: str = "safetensors",
                        **over: Any) -> Path:
    """A Stanford `HF_ColBERT` BERT checkpoint: `bert.*` (+ pooler, position_ids) + `linear.weight`."""
    config, folder = _bert_folder(folder, tokenizer_dir, **over)
    config.architectures = ["HF_ColBERT"]
    config.save_pretrained(str(folder))
    state = {f"bert.{k}": v for k, v in random_bert_state(config, seed).items()}
    state["bert.embeddings.position_ids"] = torch.arange(config.max_position_embeddings)[None]
    g = torch.Generator().manual_seed(seed + 1)
    state["linear.weight"] = torch.randn(dim, config.hidden_size, generator=g) * 0.2
    save_weights(folder, state, how)
    meta = {"query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_token": "[Q]", "doc_token": "[D]",
            "dim": dim, "query_maxlen": 32, "doc_maxlen": 180, "mask_punctuation": True,
            "attend_to_mask_tokens": False, "similarity": "cosine", "interaction": "colbert",
            "nbits": 2, "bsize": 32, "lr": 1e-5, "meta": {"version": "colbert-v0.4"}}
    if metadata:
        meta.update(metadata)
    _save_json(folder / "artifact.metadata", meta)
    return folder


def write_pylate_bert(folder: Path, *, dims: tuple[int, ...] = (16,), st_config: dict[str, Any] | None = None,
                      bias: bool = False, seed: int = 0, tokenizer_dir: Path | None = None, **over: Any) -> Path:
    """A PyLate model: BERT at the root (no prefix), `[Q] `/`[D] ` added tokens, a chain of `k_Dense/` modules."""
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        write_wordpiece_tokenizer(folder)
    else:
        _copy_tokenizer(tokenizer_dir, folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.add_tokens(["[Q] ", "[D] "])
    tok.save_pretrained(str(folder))
    config = bert_config(len(tok), **over)
    config.architectures = ["BertModel"]
    config.save_pretrained(str(folder))
    save_weights(folder, random_bert_state(config, seed))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    g = torch.Generator().manual_seed(seed + 1)
    size = config.hidden_size
    for i, out in enumerate(dims, start=1):
        sub = f"{i}_Dense"
        modules.append({"idx": i, "name": str(i), "path": sub, "type": "pylate.models.Dense.Dense"})
        _save_json(folder / sub / "config.json", {"in_features": size, "out_features": out, "bias": bias,
                                                   "activation_function": "torch.nn.modules.linear.Identity",
                                                   "use_residual": False})
        st = {"linear.weight": torch.randn(out, size, generator=g) * 0.2}
        if bias:
            st["linear.bias"] = torch.randn(out, generator=g) * 0.1
        save_weights(folder / sub, st)
        size = out
    _save_json(folder / "modules.json", modules)
    _save_json(folder / "sentence_bert_config.json", {"max_seq_length": 179, "do_lower_case": False})
    cfg = {"__version__": {"pylate": "1.2.0"}, "prompts": {}, "default_prompt_name": None,
           "similarity_fn_name": "MaxSim", "query_prefix": "[Q] ", "document_prefix": "[D] ",
           "query_length": 32, "document_length": 180, "attend_to_expansion_tokens": False,
           "skiplist_words": list(string.punctuation), "do_query_expansion": True, "model_type": "ColBERT"}
    if st_config:
        cfg.update(st_config)
    _save_json(folder / "config_sentence_transformers.json", cfg)
    return folder


# ------------------------------------------------------------------------------------------------ jina XLM-R

def jina_flash_config(vocab_size: int, **over: Any) -> dict[str, Any]:
    """A (tiny) XLMRobertaFlashConfig dict as jina-colbert-v2 ships it."""
    cfg = {
        "architectures": ["HF_ColBERT"],
        "auto_map": {
            "AutoConfig": "jinaai/xlm-roberta-flash-implementation--configuration_xlm_roberta.XLMRobertaFlashConfig",
            "AutoModel": "jinaai/xlm-roberta-flash-implementation--modeling_xlm_roberta.XLMRobertaModel",
        },
        "model_type": "xlm-roberta",
        "vocab_size": vocab_size,
        "hidden_act": "gelu",
        "type_vocab_size": 1,
        "max_position_embeddings": 8194,
        "layer_norm_eps": 1e-5,
        "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
        "position_embedding_type": "rotary",
        "rotary_emb_base": 10000.0,
        "use_flash_attn": True,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "torch_dtype": "bfloat16",
        **SMALL,
    }
    cfg.update(over)
    return cfg


def random_jina_state(cfg: dict[str, Any], seed: int = 0, dim: int = 16) -> dict[str, torch.Tensor]:
    """Random weights under jina's original key names (`roberta.emb_ln`, `mixer.Wqkv`, ...) + `linear.weight`."""
    g = torch.Generator().manual_seed(seed)
    h, f, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]

    def r(*shape: int, scale: float = 0.1) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    def ln() -> tuple[torch.Tensor, torch.Tensor]:
        return 1.0 + r(h), r(h)

    s: dict[str, torch.Tensor] = {
        "roberta.embeddings.word_embeddings.weight": r(V, h, scale=0.5),
        "roberta.embeddings.token_type_embeddings.weight": r(cfg["type_vocab_size"], h),
    }
    s["roberta.emb_ln.weight"], s["roberta.emb_ln.bias"] = ln()
    for i in range(cfg["num_hidden_layers"]):
        p = f"roberta.encoder.layers.{i}."
        s[p + "mixer.Wqkv.weight"], s[p + "mixer.Wqkv.bias"] = r(3 * h, h, scale=0.3), r(3 * h)
        s[p + "mixer.out_proj.weight"], s[p + "mixer.out_proj.bias"] = r(h, h, scale=0.3), r(h)
        s[p + "norm1.weight"], s[p + "norm1.bias"] = ln()
        s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"] = r(f, h, scale=0.3), r(f)
        s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"] = r(h, f, scale=0.3), r(h)
        s[p + "norm2.weight"], s[p + "norm2.bias"] = ln()
    s["roberta.pooler.dense.weight"], s["roberta.pooler.dense.bias"] = r(h, h), r(h)
    s["linear.weight"] = r(dim, h, scale=0.3)
    return s


def write_jina_colbert(folder: Path, *, dim: int = 16, tokenizer_dir: Path | None = None, seed: int = 0,
                       metadata: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32,
                       **over: Any) -> Path:
    """A jina-colbert-v2 style checkpoint (XLM-R + RoPE flash layout, Stanford format)."""
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        write_unigram_tokenizer(folder)
    else:
        _copy_tokenizer(tokenizer_dir, folder)
    vocab = len(AutoTokenizer.from_pretrained(str(folder)))
    cfg = jina_flash_config(vocab, **over)
    _save_json(folder / "config.json", cfg)
    state = {k: v.to(dtype) for k, v in random_jina_state(cfg, seed, dim).items()}
    save_weights(folder, state)
    meta = {"query_token_id": "[QueryMarker]", "doc_token_id": "[DocumentMarker]", "query_maxlen": 32,
            "doc_maxlen": 8192, "attend_to_mask_tokens": True, "dim": dim, "mask_punctuation": True,
            "similarity": "cosine", "interaction": "colbert"}
    if metadata:
        meta.update(metadata)
    _save_json(folder / "artifact.metadata", meta)
    return folder


# ------------------------------------------------------------------------------------------------ JinaBERT (ALiBi)

JINABERT_AUTO_MAP = {
    "AutoConfig": "jinaai/jina-bert-implementation--configuration_bert.JinaBertConfig",
    "AutoModel": "jinaai/jina-bert-implementation--modeling_bert.JinaBertModel",
    "AutoModelForMaskedLM": "jinaai/jina-bert-implementation--modeling_bert.JinaBertForMaskedLM",
}


def jinabert_config(vocab_size: int, **over: Any) -> dict[str, Any]:
    """A (tiny) jina-bert-v2 `config.json` as jina-colbert-v1-en ships it: bert + ALiBi + GEGLU, 8192 positions."""
    cfg = {
        "architectures": ["HF_ColBERT"],
        "auto_map": dict(JINABERT_AUTO_MAP),
        "model_type": "bert",
        "vocab_size": vocab_size,
        "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 6, "intermediate_size": 40,
        "hidden_act": "gelu",
        "feed_forward_type": "geglu",
        "position_embedding_type": "alibi",
        "max_position_embeddings": 8192,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.0,
        "emb_pooler": None,
        "torch_dtype": "float32",
    }
    cfg.update(over)
    return cfg


def random_jinabert_state(cfg: dict[str, Any], seed: int = 0, dim: int = 16) -> dict[str, torch.Tensor]:
    """Random weights under JinaBERT's key names (`bert.` prefix, no position table) + pooler + `linear.weight`."""
    g = torch.Generator().manual_seed(seed)
    h, f, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]

    def r(*shape: int, scale: float = 0.1) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    s: dict[str, torch.Tensor] = {
        "bert.embeddings.word_embeddings.weight": r(V, h, scale=0.5),
        "bert.embeddings.token_type_embeddings.weight": r(cfg["type_vocab_size"], h),
        "bert.embeddings.LayerNorm.weight": 1.0 + r(h), "bert.embeddings.LayerNorm.bias": r(h),
    }
    for i in range(cfg["num_hidden_layers"]):
        p = f"bert.encoder.layer.{i}."
        for name in ("query", "key", "value"):
            s[p + f"attention.self.{name}.weight"], s[p + f"attention.self.{name}.bias"] = r(h, h, scale=0.4), r(h)
        s[p + "attention.output.dense.weight"], s[p + "attention.output.dense.bias"] = r(h, h, scale=0.3), r(h)
        s[p + "attention.output.LayerNorm.weight"], s[p + "attention.output.LayerNorm.bias"] = 1.0 + r(h), r(h)
        s[p + "mlp.gated_layers.weight"] = r(2 * f, h, scale=0.3)
        s[p + "mlp.wo.weight"], s[p + "mlp.wo.bias"] = r(h, f, scale=0.3), r(h)
        s[p + "mlp.layernorm.weight"], s[p + "mlp.layernorm.bias"] = 1.0 + r(h), r(h)
    s["bert.pooler.dense.weight"], s["bert.pooler.dense.bias"] = r(h, h), r(h)
    s["linear.weight"] = r(dim, h, scale=0.3)
    return s


def write_jinabert_colbert(folder: Path, *, dim: int = 16, tokenizer_dir: Path | None = None, seed: int = 0,
                           metadata: dict[str, Any] | None = None, **over: Any) -> Path:
    """A jina-colbert-v1-en style checkpoint: Stanford format over a JinaBERT (ALiBi + GLU) backbone."""
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        write_wordpiece_tokenizer(folder)
    else:
        _copy_tokenizer(tokenizer_dir, folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.model_max_length = 8192
    tok.save_pretrained(str(folder))
    cfg = jinabert_config(len(tok), **over)
    _save_json(folder / "config.json", cfg)
    save_weights(folder, random_jinabert_state(cfg, seed, dim))
    meta = {"query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_maxlen": 32, "doc_maxlen": 180,
            "attend_to_mask_tokens": False, "dim": dim, "mask_punctuation": True, "similarity": "cosine",
            "interaction": "colbert"}
    if metadata:
        meta.update(metadata)
    _save_json(folder / "artifact.metadata", meta)
    return folder


# ------------------------------------------------------------------------------------------------ ModernBERT (PyLate)

MODERNBERT_SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]


def write_bpe_tokenizer(folder: Path, texts: list[str] | None = None, vocab_size: int = 400,
                        model_max_length: int = 8192) -> Path:
    """A byte-level BPE tokenizer shaped like ModernBERT's: `[CLS] ... [SEP]`, with [PAD] and [MASK]."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=MODERNBERT_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts or ENGLISH_TEXTS * 3, trainer=trainer)
    cls_id, sep_id = bpe.token_to_id("[CLS]"), bpe.token_to_id("[SEP]")
    bpe.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                  pad_token="[PAD]", mask_token="[MASK]", model_max_length=model_max_length)
    tok.save_pretrained(str(folder))
    return folder


def write_pylate_modernbert(folder: Path, *, dim: int = 16, seed: int = 0, st_config: dict[str, Any] | None = None,
                            tokenizer_max_length: int = 8192, **over: Any) -> Path:
    """A PyLate model on ModernBERT (GTE-ModernColBERT-v1 layout): root `ModernBertModel` keys, `1_Dense`."""
    from transformers import AutoTokenizer, ModernBertConfig, ModernBertModel

    write_bpe_tokenizer(folder, model_max_length=tokenizer_max_length)
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.add_tokens(["[Q] ", "[D] "])
    tok.save_pretrained(str(folder))
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("[CLS]", "[SEP]", "[PAD]")}
    kw: dict[str, Any] = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                              intermediate_size=48, max_position_embeddings=512, local_attention=16,
                              global_attn_every_n_layers=3, pad_token_id=ids["[PAD]"], cls_token_id=ids["[CLS]"],
                              sep_token_id=ids["[SEP]"], bos_token_id=ids["[CLS]"], eos_token_id=ids["[SEP]"])
    kw.update(over)
    config = ModernBertConfig(**kw)
    config.architectures = ["ModernBertModel"]
    torch.manual_seed(seed)
    model = ModernBertModel(config)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for k in state:  # norms away from their init, so that a swapped norm would show
        if "norm" in k:
            state[k] = state[k] + 0.1 * torch.randn_like(state[k])
    config.save_pretrained(str(folder))
    save_weights(folder, state)
    g = torch.Generator().manual_seed(seed + 1)
    _save_json(folder / "1_Dense" / "config.json", {"in_features": config.hidden_size, "out_features": dim,
                                                    "bias": False,
                                                    "activation_function": "torch.nn.modules.linear.Identity"})
    save_weights(folder / "1_Dense", {"linear.weight": torch.randn(dim, config.hidden_size, generator=g) * 0.2})
    _save_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ])
    _save_json(folder / "sentence_bert_config.json", {"max_seq_length": 299, "do_lower_case": False})
    cfg = {"__version__": {"pylate": "1.6.0", "sentence_transformers": "5.1.2", "transformers": "5.3.0"},
           "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "MaxSim",
           "query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 32, "document_length": 300,
           "attend_to_expansion_tokens": False, "skiplist_words": list(string.punctuation),
           "do_query_expansion": True, "model_type": "ColBERT"}
    if st_config:
        cfg.update(st_config)
    _save_json(folder / "config_sentence_transformers.json", cfg)
    return folder


def rename_norms_to_legacy(folder: Path) -> int:
    """Rewrite `folder`'s weights with LayerNorm/norm `weight`/`bias` as `gamma`/`beta` (transformers <= 5.3's names).

    Returns the number of renamed tensors."""
    from safetensors.torch import load_file

    path = folder / "model.safetensors"
    state = load_file(str(path))
    out, renamed = {}, 0
    for key, value in state.items():
        stem, _, leaf = key.rpartition(".")
        if "norm" in stem.lower() and leaf in ("weight", "bias"):
            key, renamed = f"{stem}.{'gamma' if leaf == 'weight' else 'beta'}", renamed + 1
        out[key] = value
    path.unlink()
    save_weights(folder, out)
    return renamed
