"""Child process for tests/test_crash_safety.py: runs index writes and kills itself at chosen points.

Usage: ``python -m tests.crash_child PLAN.json RESULTS.json``

The plan names the MiniLM folder and a list of jobs ``{"id", "root", "index_name", "op", "args",
"kill"}``. The encoder is loaded once; every job then runs in a ``fork()``-ed grandchild so that each
kill costs no model load. Before the job runs, the grandchild installs its kill point by monkeypatching
(only inside that grandchild — the library has no test hooks): when the patched function is entered (or
has just returned), the process sends itself SIGKILL, the same as a power cut for everything not yet
fsynced or renamed. The runner writes ``{job id: {"signal": int | None, "exit": int | None}}``.

Torch runs on one thread here (OMP_NUM_THREADS=1 is set by the test as well): libgomp's thread pool does
not survive ``fork()``, and one thread also makes every build deterministic, so a job killed after its
commit point must leave exactly the same index as the job's un-killed reference run.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------------------------------------
# kill points: name -> (patch installer). `when` is "enter" (before the call) or "exit" (after it returned).
# ------------------------------------------------------------------------------------------------


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _wrap(owner: Any, attr: str, *, when: str = "enter", nth: int = 1,
          predicate: Callable[..., bool] | None = None) -> None:
    """Replace ``owner.attr`` by a wrapper that kills the process at its ``nth`` matching call."""
    original = getattr(owner, attr)
    if isinstance(original, (staticmethod, classmethod)):  # pragma: no cover - not used on such attrs
        raise TypeError(f"cannot wrap {attr}")
    seen = [0]

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        hit = predicate is None or predicate(*args, **kwargs)
        if hit:
            seen[0] += 1
        fire = hit and seen[0] == nth
        if fire and when == "enter":
            _die()
        result = original(*args, **kwargs)
        if fire and when == "exit":
            _die()
        return result

    setattr(owner, attr, wrapper)


def _index_classes() -> list[type]:
    """The PassageIndex class and every subclass that defines its own methods (exact, plaid, ...)."""
    import importlib
    import pkgutil

    import lateragkit.index as index_pkg

    for info in pkgutil.iter_modules(index_pkg.__path__):
        importlib.import_module(f"lateragkit.index.{info.name}")
    base = index_pkg.PassageIndex
    seen: list[type] = []
    todo = [base]
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.append(cls)
            todo.extend(cls.__subclasses__())
    return seen


def _wrap_index_method(name: str, *, when: str = "enter") -> None:
    # Whatever class the loaded index has, its `name` method is one of these definitions.
    counter = [0]
    for cls in _index_classes():
        if name in cls.__dict__:
            original = cls.__dict__[name]

            def wrapper(*args: Any, __original=original, **kwargs: Any) -> Any:
                counter[0] += 1
                if counter[0] == 1 and when == "enter":
                    _die()
                result = __original(*args, **kwargs)
                if counter[0] == 1 and when == "exit":
                    _die()
                return result

            setattr(cls, name, wrapper)


def _is_current(*args: Any, **kwargs: Any) -> bool:
    dst = kwargs.get("dst", args[1] if len(args) > 1 else None)
    return dst is not None and Path(os.fsdecode(dst)).name == "CURRENT"


def _is_dir_move(*args: Any, **kwargs: Any) -> bool:
    src = kwargs.get("src", args[0] if args else None)
    return src is not None and Path(os.fsdecode(src)).is_dir()


def _wrap_npy_writes(nth: int) -> None:
    """Kill when the ``nth`` .npy file is complete: one written whole by ``np.save`` (its
    ``format.write_array``) or one streamed by ``NpyAppender`` (its ``close``)."""
    import numpy as np

    from lateragkit.index.storage import NpyAppender

    save = getattr(np.save, "__wrapped__", np.save)
    fmt = save.__globals__["format"]  # np.save looks `format.write_array` up at call time
    counter = [0]

    def counted(owner: Any, attr: str) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if attr == "close" and args and args[0]._fh.closed:
                return original(*args, **kwargs)  # a second close() writes nothing
            result = original(*args, **kwargs)
            counter[0] += 1
            if counter[0] == nth:
                _die()
            return result

        setattr(owner, attr, wrapper)

    counted(fmt, "write_array")
    counted(NpyAppender, "close")


def install(kill: str) -> None:
    """Install the kill point named ``kill`` (see the table in tests/test_crash_safety.py)."""
    import lateragkit.collection as collection
    from lateragkit.index.storage import VersionedDir
    from lateragkit.store import PassageStore

    name, _, nth_text = kill.partition("#")
    nth = int(nth_text) if nth_text else 1
    if name == "build_index":  # before the backend gets any file
        _wrap(collection, "build_index", nth=nth)
    elif name == "npy_write":  # in the middle of writing the backend's .npy files
        _wrap_npy_writes(nth)
    elif name == "index_add":  # PassageIndex.add entered (add_to_index)
        _wrap_index_method("add")
    elif name == "index_replace":  # PassageIndex.replace entered (an upsert: delete + add in one version)
        _wrap_index_method("replace")
    elif name == "index_delete":  # PassageIndex.delete entered (delete_from_index)
        _wrap_index_method("delete")
    elif name == "store_create":  # backend written, passage store being created
        _wrap(PassageStore, "create", nth=nth)
    elif name == "store_append":  # backend written, the new store segment being written
        _wrap(PassageStore, "append", nth=nth)
    elif name == "store_relink":  # backend written, the store's segments being linked into the new version
        _wrap(PassageStore, "relink", nth=nth)
    elif name == "write_meta":  # every file of the new version written, commit not started
        _wrap(collection.IndexMeta, "write", when="exit", nth=nth)
    elif name == "fsync":  # during the commit's fsyncs
        _wrap(os, "fsync", nth=nth)
    elif name == "rename_version":  # staging folder about to become the next version folder
        _wrap(os, "rename", nth=nth, predicate=_is_dir_move)
        _wrap(os, "replace", nth=nth, predicate=_is_dir_move)
    elif name == "replace_current":  # the commit point itself, just before it
        _wrap(os, "replace", nth=nth, predicate=_is_current)
    elif name == "after_commit":  # CURRENT replaced, before the writer swapped its state or cleaned
        _wrap(os, "replace", when="exit", nth=nth, predicate=_is_current)
    elif name == "clean":  # #1: the writer lock just taken, nothing staged yet; #2: the post-commit clean-up
        _wrap(VersionedDir, "clean", nth=nth)
    else:
        raise ValueError(f"unknown kill point {kill!r}")


# ------------------------------------------------------------------------------------------------
def run_job(encoder: Any, job: dict[str, Any]) -> None:
    from lateragkit import RAGPretrainedModel

    rag = RAGPretrainedModel(encoder, index_root=job["root"], verbose=0)
    args = job["args"]
    if job["kill"]:
        install(job["kill"])
    op = job["op"]
    if op == "build":
        rag.index(args["texts"], document_ids=args["ids"], index_name=job["index_name"],
                  index_type=args["index_type"])
    elif op in ("add", "upsert"):
        rag.add_to_index(args["texts"], new_document_ids=args["ids"], index_name=job["index_name"])
    elif op == "delete":
        rag.delete_from_index(args["ids"], index_name=job["index_name"])
    else:
        raise ValueError(f"unknown op {op!r}")


def main(plan_path: str, results_path: str) -> None:
    import torch

    torch.set_num_threads(1)
    from lateragkit.models import load_encoder

    plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    encoder = load_encoder(plan["model"], device="cpu")
    encoder.encode_queries(["warm up"])  # first call's lazy set-up happens once, before the forks
    results: dict[str, dict[str, int | None]] = {}
    for job in plan["jobs"]:
        sys.stdout.flush()
        sys.stderr.flush()
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                run_job(encoder, job)
            except BaseException:  # report, never fall back into the runner's loop
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        results[job["id"]] = {
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "seconds": round(time.perf_counter() - started, 2),
        }
    Path(results_path).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
