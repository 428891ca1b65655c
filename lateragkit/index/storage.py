"""Crash-safe, versioned index folders and the `.npy`/`.json` file helpers every backend uses.

An index path holds ``CURRENT`` (JSON naming the live version) and version folders ``v00000001/``, …
A write goes into a fresh staging folder; on success its files are fsynced, the folder is renamed to
the next version and ``CURRENT`` is replaced atomically with ``os.replace`` (the commit point). A crash
before that point leaves the previous version live and untouched; leftovers are removed by ``clean()``.
Files of a committed version are never modified, only unlinked, so a reader that memory-mapped an old
version keeps working after a newer one is committed and the old one cleaned.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import CorruptIndexError, IndexNotFoundError

logger = logging.getLogger(__name__)

__all__ = [
    "VersionedDir",
    "NpyAppender",
    "save_npy",
    "load_npy",
    "write_json",
    "read_json",
    "link_or_copy",
    "fsync_tree",
]

CURRENT = "CURRENT"
_VERSION_RE = re.compile(r"^v(\d{8})$")
_STAGING_PREFIX = ".staging-"
_CURRENT_TMP_PREFIX = ".CURRENT-"
_REBUILD = "the index must be rebuilt"

# Staging folders being written by this process right now: clean() never removes them.
_active_staging: set[Path] = set()
_active_lock = threading.Lock()


# --------------------------------------------------------------------------------------------------
# fsync helpers
# --------------------------------------------------------------------------------------------------
def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    # Directory fsync makes renames/creations durable on POSIX; Windows cannot open directories.
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (itself included)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            _fsync_file(Path(dirpath) / name)
        _fsync_dir(Path(dirpath))


# --------------------------------------------------------------------------------------------------
# VersionedDir
# --------------------------------------------------------------------------------------------------
class VersionedDir:
    """A folder holding committed index versions and a ``CURRENT`` pointer (see the module docstring).

    One writer at a time per folder (the facade serialises writers); any number of readers.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"VersionedDir({str(self.path)!r})"

    # ---- reading ------------------------------------------------------------------------------
    def exists(self) -> bool:
        """True when ``CURRENT`` exists (a committed version is there)."""
        return (self.path / CURRENT).is_file()

    def current(self) -> Path:
        """Folder of the live version. `IndexNotFoundError` when nothing was committed here,
        `CorruptIndexError` when ``CURRENT`` is unreadable or names a missing folder."""
        pointer = self.path / CURRENT
        if not pointer.is_file():
            raise IndexNotFoundError(f"no index at {self.path} (no {CURRENT} file); build one first")
        try:
            data = json.loads(pointer.read_text(encoding="utf-8"))
            name = data["version"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptIndexError(f"{pointer} is unreadable ({exc}); {_REBUILD}") from exc
        if not isinstance(name, str) or not _VERSION_RE.match(name):
            raise CorruptIndexError(f"{pointer} names {name!r}, not a version folder; {_REBUILD}")
        folder = self.path / name
        if not folder.is_dir():
            raise CorruptIndexError(f"{pointer} names {name}, but {folder} is missing; {_REBUILD}")
        return folder

    def versions(self) -> list[Path]:
        """Committed-looking version folders, oldest first (the live one among them)."""
        if not self.path.is_dir():
            return []
        found = [p for p in self.path.iterdir() if p.is_dir() and _VERSION_RE.match(p.name)]
        return sorted(found, key=lambda p: p.name)

    def _next_version_name(self) -> str:
        numbers = [int(_VERSION_RE.match(p.name).group(1)) for p in self.versions()]  # type: ignore[union-attr]
        return f"v{(max(numbers) + 1 if numbers else 1):08d}"

    # ---- writing ------------------------------------------------------------------------------
    @contextmanager
    def stage(self) -> Iterator[Path]:
        """Yield an empty staging folder inside the index path; commit it as the next version on success.

        On an exception inside the block the staging folder is removed and the previous version stays
        live. The commit fsyncs every staged file, renames the folder to the next ``vNNNNNNNN`` and
        replaces ``CURRENT`` with ``os.replace``.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        staging = self.path / f"{_STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        with _active_lock:
            _active_staging.add(staging.resolve())
        try:
            try:
                yield staging
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            self._commit(staging)
        finally:
            with _active_lock:
                _active_staging.discard(staging.resolve())

    def _commit(self, staging: Path) -> None:
        try:
            fsync_tree(staging)
            name = self._next_version_name()
            target = self.path / name
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_dir(self.path)
        tmp = self.path / f"{_CURRENT_TMP_PREFIX}{uuid.uuid4().hex[:12]}"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump({"version": name}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path / CURRENT)  # the commit point
        except BaseException:
            # Not committed: the renamed folder is a leftover for clean(); CURRENT is unchanged.
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.path)
        logger.debug("committed %s as %s", self.path, name)

    def clean(self) -> None:
        """Remove stale staging folders, temporary pointer files and every version but the live one.

        Files are only unlinked, so readers of a removed version keep their open memory maps.
        Without a readable ``CURRENT`` no version folder is removed (the live one is unknown).
        """
        if not self.path.is_dir():
            return
        self._clean_staging()
        try:
            live = self.current()
        except (IndexNotFoundError, CorruptIndexError) as exc:
            logger.info("not removing version folders of %s: %s", self.path, exc)
            return
        for folder in self.versions():
            if folder.name != live.name:
                _remove_tree(folder)

    def _clean_staging(self) -> None:
        with _active_lock:
            active = set(_active_staging)
        for entry in self.path.iterdir():
            if entry.name.startswith(_STAGING_PREFIX) and entry.is_dir():
                if entry.resolve() in active:
                    continue
                _remove_tree(entry)
            elif entry.name.startswith(_CURRENT_TMP_PREFIX) and entry.is_file():
                entry.unlink(missing_ok=True)


def _remove_tree(folder: Path) -> None:
    def _onerror(func: Any, path: str, exc: Any) -> None:
        # e.g. Windows refuses to unlink a memory-mapped file: leave it for a later clean()
        logger.info("could not remove %s (%s); a later clean() retries", path, exc)

    if sys.version_info >= (3, 12):
        shutil.rmtree(folder, onexc=_onerror)
    else:
        shutil.rmtree(folder, onerror=_onerror)


# --------------------------------------------------------------------------------------------------
# .npy / .json helpers
# --------------------------------------------------------------------------------------------------
def save_npy(path: Path, array: np.ndarray) -> None:
    """Write one array as `.npy` (never pickled)."""
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise TypeError(f"refusing to write an object array to {path}")
    np.save(path, array, allow_pickle=False)


class NpyAppender:
    """Write a `.npy` file row block by row block when the final row count is unknown in advance.

    A fixed 128-byte header is reserved first and filled in by `close()`: the data never passes
    through memory at once.
    """

    HEADER_BYTES = 128

    def __init__(self, path: Path, dtype: np.dtype | type, row_shape: Sequence[int] = ()) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(int(s) for s in row_shape)
        self.rows = 0
        self._fh = open(self.path, "wb")
        self._fh.write(b"\0" * self.HEADER_BYTES)

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if tuple(block.shape[1:]) != self.row_shape:
            raise ValueError(f"{self.path.name}: block of shape {block.shape} does not match rows {self.row_shape}")
        self._fh.write(block.tobytes())
        self.rows += int(block.shape[0])

    def close(self) -> None:
        if self._fh.closed:
            return
        shape = (self.rows, *self.row_shape)
        descr = np.lib.format.dtype_to_descr(self.dtype)
        header = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
        # magic (6) + version (2) + header length (2) + header text padded with spaces and a newline
        room = self.HEADER_BYTES - 10
        text = header.ljust(room - 1) + "\n"
        if len(text) != room:
            raise ValueError(f"shape {shape} too large for the reserved .npy header")
        self._fh.seek(0)
        self._fh.write(b"\x93NUMPY\x01\x00" + room.to_bytes(2, "little") + text.encode("latin1"))
        self._fh.close()

    def abort(self) -> None:
        self._fh.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> NpyAppender:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def load_npy(
    path: Path,
    *,
    dtype: np.dtype | type | Sequence[np.dtype | type] | None = None,
    shape: Sequence[int | None] | None = None,
    mmap: bool = True,
) -> np.ndarray:
    """Load (memory-map) a `.npy` file and check it; any problem is a `CorruptIndexError` naming the file.

    ``shape`` entries of None are not checked. Pickled content is never loaded.
    """
    if not path.is_file():
        raise CorruptIndexError(f"{path} is missing; {_REBUILD}")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as exc:  # truncated, not .npy, pickled, object dtype, ...
        raise CorruptIndexError(f"{path} is not a readable .npy array ({exc}); {_REBUILD}") from exc
    if not isinstance(array, np.ndarray):  # np.load returns NpzFile for zip archives
        raise CorruptIndexError(f"{path} is not a single .npy array; {_REBUILD}")
    if dtype is not None:
        wanted: Sequence[Any] = dtype if isinstance(dtype, (list, tuple)) else [dtype]
        allowed = [np.dtype(d) for d in wanted]
        if array.dtype not in allowed:
            raise CorruptIndexError(
                f"{path} has dtype {array.dtype}, expected {' or '.join(map(str, allowed))}; {_REBUILD}"
            )
    if shape is not None:
        ok = array.ndim == len(shape) and all(s is None or int(s) == a for s, a in zip(shape, array.shape, strict=True))
        if not ok:
            want = tuple("*" if s is None else int(s) for s in shape)
            raise CorruptIndexError(f"{path} has shape {array.shape}, expected {want}; {_REBUILD}")
    return array


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object; `CorruptIndexError` naming the file when it is missing or malformed."""
    if not path.is_file():
        raise CorruptIndexError(f"{path} is missing; {_REBUILD}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptIndexError(f"{path} is not valid JSON ({exc}); {_REBUILD}") from exc
    if not isinstance(data, dict):
        raise CorruptIndexError(f"{path} does not hold a JSON object; {_REBUILD}")
    return data


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link an unchanged file into a new version (files are never modified in place), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
