"""`benchmarks/RESULTS.md`: each benchmark script owns one ``## Section`` and rewrites only that one."""
from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(section: str, text: str, path: Path = RESULTS) -> None:
    """Replace the block that starts with the heading ``section`` (up to the next ``## `` heading) by
    ``text`` (which starts with that heading), or append it; the other sections stay as they are."""
    old = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    block = text.rstrip("\n") + "\n\n"
    new = pattern.sub(lambda _: block, old, count=1) if pattern.search(old) else old.rstrip("\n") + "\n\n" + block
    path.write_text(new.rstrip("\n") + "\n", encoding="utf-8")
