"""Crash safety and cross-process behaviour of the embedded Qdrant index (qdrant-edge-py).

- A writer killed with SIGKILL at a random moment of a stream of document replacements leaves every
  document complete (all its passages from one write), and no acknowledged write is lost.
- A second process cannot open a folder that another process holds open: it gets `QdrantLockedError`.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lateragkit.qdrant import QdrantIndex, QdrantLocation

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("qdrant_edge") is None,
    reason='qdrant-edge-py not installed (optional extra): pip install "lateragkit[qdrant]"',
)

REPO = Path(__file__).resolve().parents[1]
N_DOCS, DIM = 12, 8

# Rewrites all documents again and again; generation g gives document j  1 + (g + j) % 4  passages whose
# content is "gen g". Prints g once upsert_documents(g) has returned (acknowledged).
WRITER = f"""
import sys
import numpy as np
from lateragkit.qdrant import QdrantIndex, QdrantLocation
location = QdrantLocation(path=sys.argv[1])
try:
    index = QdrantIndex.open(location)
except Exception:
    index = QdrantIndex.create(location, dim={DIM})
index.batch_tokens = 40  # several engine operations per call
rng = np.random.default_rng(int(sys.argv[2]))
gen = int(sys.argv[3])
kill_after = int(sys.argv[4])  # > 0: SIGKILL this process right after that many engine upserts
if kill_after:
    import os, signal
    upsert, done = index._engine.upsert, [0]
    def counted(points):
        upsert(points)
        done[0] += 1
        if done[0] == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    index._engine.upsert = counted
while True:
    gen += 1
    passages, vectors = [], []
    for j in range({N_DOCS}):
        for i in range(1 + (gen + j) % 4):
            passages.append({{"passage_id": f"d{{j}}-{{i}}", "document_id": f"d{{j}}", "content": f"gen {{gen}}",
                             "start_char": None, "end_char": None, "document_metadata": {{"gen": gen}}}})
            vectors.append(rng.standard_normal((5, {DIM})).astype(np.float32))
    index.upsert_documents([f"d{{j}}" for j in range({N_DOCS})], passages, vectors)
    print(gen, flush=True)
"""

HOLDER = """
import sys
from lateragkit.qdrant import QdrantIndex, QdrantLocation
index = QdrantIndex.open(QdrantLocation(path=sys.argv[1]))
print("open", flush=True)
sys.stdin.readline()
index.close()
"""

OPENER = """
import sys
from lateragkit.qdrant import QdrantIndex, QdrantLocation
try:
    QdrantIndex.open(QdrantLocation(path=sys.argv[1])).close()
    print("opened")
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _run_writer(path: Path, seed: int, start_gen: int, kill_after_ops: int) -> int:
    """Run the writer until it is killed — by itself right after its `kill_after_ops`-th engine upsert, or
    (0) by us at a random moment after it acknowledged one generation — and return the last acknowledged
    generation."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(seed), str(start_gen), str(kill_after_ops)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout is not None and proc.stderr is not None
    if kill_after_ops:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, err
        return int(out.split()[-1]) if out.strip() else start_gen
    line = proc.stdout.readline()
    assert line, f"writer died: {proc.stderr.read()}"
    sum(range(int(np.random.default_rng(seed).integers(0, 400_000))))  # a random bit of the next generation
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rest = proc.stdout.read().split()
    return int(rest[-1]) if rest else int(line)


def _check_complete(path: Path, acknowledged: int) -> int:
    """Every document holds exactly the passages of one generation >= the acknowledged one."""
    with QdrantIndex.open(QdrantLocation(path=path)) as index:
        Q = torch.ones(1, 1, DIM)
        (hits,) = index.search(Q, torch.ones(1, 1, dtype=torch.bool), 10_000, exact=True)
        by_doc: dict[str, list[dict]] = {}
        for _, rec in hits:
            by_doc.setdefault(rec["document_id"], []).append(rec)
        if acknowledged > 0:  # before the first acknowledged write, documents not yet written are absent
            assert sorted(by_doc) == sorted(f"d{j}" for j in range(N_DOCS))
        assert by_doc, "nothing survived"
        newest = 0
        for j in range(N_DOCS):
            recs = by_doc.get(f"d{j}")
            if recs is None:
                continue
            gens = {rec["document_metadata"]["gen"] for rec in recs}
            assert len(gens) == 1, f"document d{j} mixes generations {gens}"
            gen = gens.pop()
            assert acknowledged <= gen <= acknowledged + 1, (gen, acknowledged)
            assert sorted(rec["passage_id"] for rec in recs) == [f"d{j}-{i}" for i in range(1 + (gen + j) % 4)]
            assert all(rec["content"] == f"gen {gen}" for rec in recs)
            newest = max(newest, gen)
        assert index.count_passages() == len(hits)
        assert index.document_ids() == set(by_doc)
        return newest


def test_killed_writer_leaves_every_document_whole(tmp_path: Path) -> None:
    path = tmp_path / "crash"
    gen = 0
    # killed right after an engine operation in the middle of a call (between a replacing upsert and the
    # deletion of its tombstones; the first one inside the very first call), then at a random moment
    for round_, kill_after_ops in enumerate((2, 11, 0)):
        acknowledged = _run_writer(path, seed=round_, start_gen=gen, kill_after_ops=kill_after_ops)
        gen = _check_complete(path, acknowledged)


def test_second_process_is_refused_while_the_folder_is_open(tmp_path: Path) -> None:
    path = tmp_path / "shared"
    QdrantIndex.create(QdrantLocation(path=path), dim=DIM).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=_env())
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "open"
        refused = subprocess.run([sys.executable, "-c", OPENER, str(path)], capture_output=True, text=True,
                                 env=_env(), timeout=120)
        assert refused.stdout.startswith("QdrantLockedError"), refused.stdout + refused.stderr
        assert "another process" in refused.stdout
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=60)
    allowed = subprocess.run([sys.executable, "-c", OPENER, str(path)], capture_output=True, text=True,
                             env=_env(), timeout=120)
    assert allowed.stdout.strip() == "opened", allowed.stderr
