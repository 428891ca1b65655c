"""The example notebooks run headless on the shared data with the MiniLM encoder, and are stored clean.

Each notebook is executed with nbclient (kernel ``python3``) in an empty temporary working directory,
with ``LATERAGKIT_DATA`` and ``LATERAGKIT_MODEL`` pointing at the shared data and the local MiniLM
folder. The notebooks contain their own ``assert`` lines, so a behaviour change fails here.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import DATA, data_dir, minilm_path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = ["01_quickstart.ipynb", "02_langchain_rag.ipynb", "03_llama_index_rerank.ipynb", "04_evaluation.ipynb"]
# What each notebook needs beyond the core library (skipped with the reason when absent).
NEEDS = {
    "02_langchain_rag.ipynb": ["langchain_core"],
    "03_llama_index_rerank.ipynb": ["llama_index.core"],
    "04_evaluation.ipynb": ["matplotlib"],
}
CELL_TIMEOUT_S = 300


def _find(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def test_notebooks_exist_and_are_stored_without_outputs() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        nb = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))
        assert nb["metadata"]["kernelspec"]["name"] == "python3"
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code, name
        for cell in code:
            assert cell["outputs"] == [], f"{name}: stored outputs in cell {cell.get('id')}"
            assert cell["execution_count"] is None, f"{name}: stored execution count in cell {cell.get('id')}"
        # data and model come from the environment, never from a path on the author's machine
        source = "".join("".join(c["source"]) for c in code)
        assert "LATERAGKIT_DATA" in source and "/work/" not in source and "/home/" not in source


def test_notebooks_match_their_generator() -> None:
    pytest.importorskip("nbformat", reason="nbformat not installed: pip install 'lateragkit[test]'")
    proc = subprocess.run(
        [sys.executable, str(NOTEBOOKS / "build_notebooks.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("nbclient", "nbformat", "ipykernel"):
        if not _find(module):
            pytest.skip(f"{module} not installed (needed to execute notebooks): pip install 'lateragkit[test]'")
    for module in NEEDS.get(name, []):
        if not _find(module):
            pytest.skip(f"{name} needs {module}, which is not installed")
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    from nbclient import NotebookClient

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no 'python3' Jupyter kernel: python -m ipykernel install --user")
    data_dir("adi")
    monkeypatch.setenv("LATERAGKIT_DATA", str(DATA))
    monkeypatch.setenv("LATERAGKIT_MODEL", minilm_path())
    # the kernel's own inline backend draws the figures as PNG outputs; a preset backend would hide them
    monkeypatch.delenv("MPLBACKEND", raising=False)
    # the kernel imports the library from this checkout even without an editable install
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute(cwd=str(tmp_path))
    # every code cell ran, none raised (nbclient raises CellExecutionError on the first error)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)
    if name == "04_evaluation.ipynb":
        assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), "the plot was not drawn"
