"""The backend metadata (`metadata.json`) as typed dataclasses, validated on read.

Format 2 (this release) describes a segmented index; format 1 (the flat layout of lateragkit 0.1) is read
as an index of one segment whose files lie in the backend folder itself (`IndexMeta.from_json` converts
it; `flat_layout` is then True). Any other version, a missing or ill-typed field, or a segment name that
is not ``seg-NNNNNN`` is a `CorruptIndexError` naming the file.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import CorruptIndexError
from .storage import read_json, write_json

__all__ = ["FORMAT_VERSION", "META_FILE", "IndexMeta", "SegmentMeta", "CodecMeta", "read_meta", "write_meta"]

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
META_FILE = "metadata.json"
_SEGMENT_NAME = re.compile(r"^seg-\d{6,}$")
_REBUILD = "the index must be rebuilt"


@dataclass(frozen=True)
class SegmentMeta:
    """One immutable segment: its folder name under ``segments/``, rows (passages, deleted or not),
    tokens, and (PLAID) the number of centroids when it was written (its IVF has that many lists) and
    whether it stores its tokens' decompression scales (``norms.npy``; segments of lateragkit <= 0.2.0.dev
    written before it have them computed on open)."""

    name: str
    rows: int
    tokens: int
    num_centroids: int = 0
    scales: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, path: Path) -> SegmentMeta:
        if not isinstance(data, dict):
            raise CorruptIndexError(f"{path} lists a segment that is not a JSON object; {_REBUILD}")
        name = data.get("name")
        if not isinstance(name, str) or not _SEGMENT_NAME.match(name):
            raise CorruptIndexError(f"{path} names a segment {name!r}, not seg-NNNNNN; {_REBUILD}")
        scales = data.get("scales", False)
        if not isinstance(scales, bool):
            raise CorruptIndexError(f"{path}: segment {name} has an ill-typed 'scales'; {_REBUILD}")
        return cls(name, _int(data, "rows", path), _int(data, "tokens", path), _int(data, "num_centroids", path),
                   scales)


@dataclass(frozen=True)
class CodecMeta:
    """The PLAID codec shared by every segment (files under ``codec/``)."""

    nbits: int
    num_centroids: int
    cluster_threshold: float
    avg_residual: float
    seed: int = 0
    centroids_added_since_build: int = 0
    training: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> CodecMeta:
        training = data.get("training", data.get("kmeans", {}))
        if not isinstance(training, dict):
            raise CorruptIndexError(f"{path} has an ill-typed 'training' entry; {_REBUILD}")
        return cls(
            nbits=_int(data, "nbits", path),
            num_centroids=_int(data, "num_centroids", path),
            cluster_threshold=_float(data, "cluster_threshold", path),
            avg_residual=_float(data, "avg_residual", path),
            seed=_int(data, "seed", path, default=0),
            centroids_added_since_build=_int(data, "centroids_added_since_build", path, default=0),
            training={str(k): v for k, v in training.items() if isinstance(v, (int, float))},
        )


@dataclass(frozen=True)
class IndexMeta:
    """Everything `metadata.json` records about one version of a backend folder."""

    kind: str
    dim: int
    next_pid: int
    segments: tuple[SegmentMeta, ...]
    next_segment: int
    deleted: int = 0  # tombstoned passages (rows still stored)
    built_passages: int = 0  # live passages at the last build or compaction
    added_since_build: int = 0
    deleted_since_build: int = 0
    churn_warned: bool = False  # the churn warning was given since the last build or compaction
    codec: CodecMeta | None = None
    flat_layout: bool = False  # read from a format-1 folder: its one segment's files lie in the folder itself

    @property
    def num_rows(self) -> int:
        return sum(s.rows for s in self.segments)

    @property
    def num_tokens(self) -> int:
        return sum(s.tokens for s in self.segments)

    def replace(self, **changes: Any) -> IndexMeta:
        return dataclasses.replace(self, **changes)

    def segment_name(self, number: int) -> str:
        return f"seg-{number:06d}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "next_pid": self.next_pid,
            "next_segment": self.next_segment,
            "segments": [s.to_json() for s in self.segments],
            "num_rows": self.num_rows,
            "num_tokens": self.num_tokens,
            "deleted": self.deleted,
            "built_passages": self.built_passages,
            "added_since_build": self.added_since_build,
            "deleted_since_build": self.deleted_since_build,
            "churn_warned": self.churn_warned,
        }
        if self.codec is not None:
            data["codec"] = self.codec.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> IndexMeta:
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            readable = " and ".join(map(str, READABLE_VERSIONS))
            raise CorruptIndexError(
                f"{path} has format_version {version!r}; this lateragkit reads {readable}; {_REBUILD}"
            )
        kind = data.get("kind")
        if not isinstance(kind, str):
            raise CorruptIndexError(f"{path} names no index kind; {_REBUILD}")
        common: dict[str, Any] = {
            "kind": kind,
            "dim": _int(data, "dim", path, minimum=1),
            "next_pid": _int(data, "next_pid", path),
            "built_passages": _int(data, "built_passages", path, default=0),
            "added_since_build": _int(data, "added_since_build", path, default=0),
            "deleted_since_build": _int(data, "deleted_since_build", path, default=0),
        }
        if version == 1:
            return cls._from_v1(data, path, common)
        segments = data.get("segments")
        if not isinstance(segments, list):
            raise CorruptIndexError(f"{path} lacks a valid 'segments' list; {_REBUILD}")
        segs = tuple(SegmentMeta.from_json(s, path) for s in segments)
        if len({s.name for s in segs}) != len(segs):
            raise CorruptIndexError(f"{path} lists a segment twice; {_REBUILD}")
        codec = data.get("codec")
        if codec is not None and not isinstance(codec, dict):
            raise CorruptIndexError(f"{path} has an ill-typed 'codec' entry; {_REBUILD}")
        churn_warned = data.get("churn_warned", False)
        if not isinstance(churn_warned, bool):
            raise CorruptIndexError(f"{path} has an ill-typed 'churn_warned'; {_REBUILD}")
        return cls(
            **common,
            segments=segs,
            next_segment=_int(data, "next_segment", path),
            deleted=_int(data, "deleted", path),
            churn_warned=churn_warned,
            codec=None if codec is None else CodecMeta.from_json(codec, path),
        )

    @classmethod
    def _from_v1(cls, data: dict[str, Any], path: Path, common: dict[str, Any]) -> IndexMeta:
        """A format-1 folder: one segment (``seg-000000``) whose files lie beside `metadata.json`."""
        codec = None
        if common["kind"] == "plaid":
            codec = CodecMeta.from_json(data, path)
        segment = SegmentMeta(
            "seg-000000",
            _int(data, "num_rows", path),
            _int(data, "num_tokens", path),
            codec.num_centroids if codec is not None else 0,
        )
        return cls(**common, segments=(segment,), next_segment=1, codec=codec, flat_layout=True)


def read_meta(directory: Path) -> IndexMeta:
    path = directory / META_FILE
    return IndexMeta.from_json(read_json(path), path)


def write_meta(directory: Path, meta: IndexMeta) -> None:
    write_json(directory / META_FILE, meta.to_json())


def _int(data: dict[str, Any], key: str, path: Path, *, minimum: int = 0, default: int | None = None) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CorruptIndexError(f"{path} lacks a valid {key!r}; {_REBUILD}")
    return value


def _float(data: dict[str, Any], key: str, path: Path) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise CorruptIndexError(f"{path} lacks a valid {key!r}; {_REBUILD}")
    return float(value)
