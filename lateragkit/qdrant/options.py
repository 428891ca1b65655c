"""`QdrantOptions`: how a Qdrant-backed index stores and searches its vectors (fixed at creation, stored with
the index), and `SearchPlan`: the per-call search parameters resolved against them.

Each passage is one point with two named vectors:
- ``colbert``: the passage's token vectors as a multivector compared with ``MAX_SIM`` over the ``Dot``
  product, so the score is the raw MaxSim sum of `lateragkit.scoring.maxsim` (no renormalisation, unlike
  ``Cosine``). Kept out of HNSW (``m=0``): it is only scored exactly, on the first stage's candidates;
- ``pooled``: the mean of the token vectors (``Cosine``, so its length does not matter), indexed with HNSW:
  the single-vector first stage that finds the candidates (``prefetch``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..validation import check_positive_int

__all__ = ["QdrantOptions", "SearchPlan", "SEARCH_PARAMS", "DATATYPES", "QUANTIZATIONS"]

DATATYPES = ("float16", "float32")
QUANTIZATIONS = (None, "int8")
# Per-call search parameters this backend accepts (**params of `QdrantIndex.search`).
SEARCH_PARAMS = ("candidates", "hnsw_ef", "exact")


def _int_at_least(value: Any, name: str, low: int) -> int:
    return check_positive_int(value, name, minimum=low)


@dataclass(frozen=True)
class QdrantOptions:
    """Storage and default search settings of a Qdrant-backed index.

    Attributes:
        datatype: element type of the stored token vectors: "float16" (default: lateragkit's document vectors
            are float16 already, so nothing is lost) or "float32".
        quantization: None, or "int8" for Qdrant's scalar int8 quantization (quantile 0.99) of both vectors,
            kept in RAM; the stored originals stay (see ``on_disk``).
        on_disk: keep the original vectors memory-mapped on disk instead of cached in RAM (with
            ``quantization="int8"`` only the int8 copies need RAM).
        candidates: default number of first-stage candidates per query (prefetch limit), at least ``k``.
        hnsw_ef: default HNSW ``ef`` of the first stage (None: Qdrant's default).
        hnsw_m, hnsw_ef_construct: HNSW graph parameters of the pooled vector.
        indexing_threshold_kb: a segment gets its HNSW index once its vectors exceed this many KB. Qdrant's
            default (10,000) counts the token vectors too, which would rebuild the index every ~1,000 passages;
            below the threshold the (small) pooled vectors of a segment are simply scanned.
    """

    datatype: str = "float16"
    quantization: str | None = None
    on_disk: bool = False
    candidates: int = 200
    hnsw_ef: int | None = None
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    indexing_threshold_kb: int = 100_000

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPES:
            raise ValueError(f"datatype must be one of {DATATYPES}, got {self.datatype!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}")
        if not isinstance(self.on_disk, bool):
            raise TypeError(f"on_disk must be True or False, got {self.on_disk!r}")
        _int_at_least(self.candidates, "candidates", 1)
        if self.hnsw_ef is not None:
            _int_at_least(self.hnsw_ef, "hnsw_ef", 1)
        _int_at_least(self.hnsw_m, "hnsw_m", 4)
        _int_at_least(self.hnsw_ef_construct, "hnsw_ef_construct", 4)
        _int_at_least(self.indexing_threshold_kb, "indexing_threshold_kb", 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QdrantOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown Qdrant option(s) {unknown}; valid ones are {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class SearchPlan:
    """One call's search: ``exact`` scores every (filtered) point's multivector; otherwise the first stage
    returns ``candidates`` points by HNSW over the pooled vector (``hnsw_ef``) and MaxSim ranks them."""

    k: int
    candidates: int
    hnsw_ef: int | None
    exact: bool

    @classmethod
    def resolve(cls, options: QdrantOptions, k: int, params: dict[str, Any]) -> SearchPlan:
        unknown = sorted(set(params) - set(SEARCH_PARAMS))
        if unknown:
            raise TypeError(
                f"unknown search parameter(s) {unknown} for the Qdrant backend; valid ones are "
                f"{list(SEARCH_PARAMS)} (PLAID's ncells/ndocs do not apply here)"
            )
        _int_at_least(k, "k", 1)
        candidates = _int_at_least(params.get("candidates", options.candidates), "candidates", 1)
        ef = params.get("hnsw_ef", options.hnsw_ef)
        if ef is not None:
            _int_at_least(ef, "hnsw_ef", 1)
        exact = params.get("exact", False)
        if not isinstance(exact, bool):
            raise TypeError(f"exact must be True or False, got {exact!r}")
        # the first stage must return at least k points for k results, and HNSW needs ef >= its limit
        candidates = max(candidates, k)
        return cls(k=k, candidates=candidates, hnsw_ef=None if ef is None else max(ef, candidates), exact=exact)
