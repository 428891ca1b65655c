"""Child process for tests/test_no_lost_writes.py: one writer of a shared index.

Usage: ``python -m tests.writer_child INDEX_PATH WORKER OP N``

``OP`` is ``add`` (N documents ``w<WORKER>-<i>``, one ``add_to_index`` each, with metadata) or ``delete``
(delete documents ``base-<i>`` for i < N, one call each). The instance is opened once with
``from_index`` before any write, so from the second write on (and whenever another process wrote in
between) it is a stale instance: every write must still start from the newest committed version.
"""
from __future__ import annotations

import sys

import torch


def main(index_path: str, worker: str, op: str, n: int) -> None:
    torch.set_num_threads(1)
    from lateragkit import RAGPretrainedModel

    rag = RAGPretrainedModel.from_index(index_path, device="cpu", verbose=0)
    for i in range(n):
        if op == "add":
            doc_id = f"w{worker}-{i}"
            rag.add_to_index([f"Worker {worker} wrote document number {i} about topic {worker}x{i}."],
                             new_document_ids=[doc_id], new_document_metadatas=[{"worker": worker, "i": i}])
        elif op == "delete":
            rag.delete_from_index([f"base-{i}"])
        else:
            raise ValueError(op)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
