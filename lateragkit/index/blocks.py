"""Run a function over blocks of work on torch's threads: the one place search stages go parallel.

Most of a PLAID search's CPU time goes to numpy gathers (single-threaded, but they release the GIL) and
torch GEMMs; numpy's segmented maxima (``reduceat``) and Python's own steps hold the GIL. With
``torch.get_num_threads() > 1`` the blocks of a stage (or the queries of a batch) are spread over that many
Python threads of one shared pool; with one thread (or one block) they run in a plain loop. Results come back
in block order, so a stage's output does not depend on the thread count.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = ["map_blocks"]

T = TypeVar("T")
R = TypeVar("R")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(workers, thread_name_prefix="lateragkit-blocks"), workers
        return _pool


def map_blocks(fn: Callable[[T], R], blocks: Sequence[T]) -> list[R]:
    """``[fn(b) for b in blocks]``, on torch's thread count of pool threads when that is above one and there
    is more than one block (the calling thread is never a pool thread: no nested pools)."""
    workers = torch.get_num_threads()
    if workers <= 1 or len(blocks) <= 1 or threading.current_thread().name.startswith("lateragkit-blocks"):
        return [fn(b) for b in blocks]
    return list(_executor(workers).map(fn, blocks))
