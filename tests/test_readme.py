"""The README's code runs: every ```python block marked ``# test: run`` is executed.

Substitution (the only change made to a block before it runs): the model name
``"colbert-ir/colbertv2.0"`` becomes the local all-MiniLM-L6-v2 folder, because CI has no model hub.
Each block runs alone (fresh namespace) in an empty temporary working directory, with
``LATERAGKIT_DATA`` set to the shared data folder. A ``# test: expect TEXT`` line in a block
additionally requires ``TEXT`` in what the block prints. A block needing an extra that is not
installed is skipped. ``docs/snippets.md`` (where the README pipelines are drafted) is checked the same way.
"""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from lateragkit.exceptions import MissingExtraError

from .conftest import DATA, minilm_path

REPO = Path(__file__).resolve().parents[1]
MARKER = "# test: run"
EXPECT = re.compile(r"^\s*# test: expect (.+?)\s*$", re.MULTILINE)
MODEL_NAME = re.compile(r"""(["'])colbert-ir/colbertv2\.0\1""")
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
OPTIONAL_FRAMEWORKS = ("langchain_core", "langchain_classic", "llama_index")


def marked_blocks(path: Path) -> list[tuple[int, str]]:
    """(line number, code) of each ```python block of ``path`` containing the marker."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(1))
        for m in FENCE.finditer(text)
        if MARKER in m.group(1)
    ]


def _cases() -> list:
    cases = []
    for name in ("README.md", "docs/snippets.md"):
        for line, code in marked_blocks(REPO / name):
            cases.append(pytest.param(name, line, code, id=f"{name}:{line}"))
    return cases


def test_readme_has_runnable_blocks() -> None:
    blocks = marked_blocks(REPO / "README.md")
    assert blocks, (
        f"README.md has no ```python block containing {MARKER!r}: paste the pipelines from docs/snippets.md "
        "(with their marker comments) so that the README's examples are tested"
    )


def test_block_parser_finds_the_snippets() -> None:
    blocks = marked_blocks(REPO / "docs" / "snippets.md")
    assert len(blocks) == 3
    assert all(MODEL_NAME.search(code) for _, code in blocks)


@pytest.mark.parametrize(("source", "line", "code"), _cases())
def test_marked_block_runs(
    source: str, line: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = minilm_path()
    runnable = MODEL_NAME.sub(lambda _: repr(model), code)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LATERAGKIT_DATA", str(DATA))
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(runnable, f"{source}:{line}", "exec"), {"__name__": "__readme__"})
    except (MissingExtraError, ModuleNotFoundError) as exc:
        missing = getattr(exc, "name", None) or str(exc)
        if isinstance(exc, MissingExtraError) or any(f in missing for f in OPTIONAL_FRAMEWORKS):
            pytest.skip(f"{source}:{line} needs an optional extra that is not installed: {exc}")
        raise
    printed = out.getvalue()
    for expected in EXPECT.findall(code):
        assert expected in printed, f"{source}:{line} should print {expected!r}; it printed:\n{printed}"
