"""The example notebooks: committed with their outputs (so GitHub shows results), generated from
``notebooks/build_notebooks.py``, and run headless here on the shared data with the MiniLM encoder.

Each notebook is executed with nbclient (kernel ``python3``) from an in-memory copy, in an empty temporary
working directory, with ``LATERAGKIT_DATA`` and ``LATERAGKIT_MODEL`` pointing at the shared data and the
local MiniLM folder; the committed file is never rewritten. The notebooks contain their own ``assert`` lines,
so a behaviour change fails here.
"""
from __future__ import annotations

import hashlib
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
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
MAX_NOTEBOOK_BYTES = 300_000  # outputs are kept small: tables, a plot, no progress-bar logs
LOCAL_PATHS = ("/work/", "/home/", "/tmp/", "/usr/", "site-packages", "C:\\")


def _find(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _text_of(output: dict) -> str:
    if output.get("output_type") == "stream":
        return "".join(output.get("text", ""))
    data = output.get("data", {})
    return "".join("".join(v) if isinstance(v, list) else str(v) for k, v in data.items() if k.startswith("text/"))


def test_notebooks_are_stored_with_their_outputs() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        path = NOTEBOOKS / name
        assert path.stat().st_size < MAX_NOTEBOOK_BYTES, f"{name}: {path.stat().st_size} bytes of outputs"
        nb = json.loads(path.read_text(encoding="utf-8"))
        assert nb["metadata"]["kernelspec"]["name"] == "python3"
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code, name
        # every cell ran, in order, in one session, and none failed
        assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), name
        outputs = [o for c in code for o in c["outputs"]]
        assert not [o for o in outputs if o["output_type"] == "error"], name
        assert sum(bool(c["outputs"]) for c in code) >= len(code) // 2, f"{name}: most cells show a result"
        # no widget a static viewer cannot draw, no path from the machine that ran it
        assert not [o for o in outputs if WIDGET_MIME in o.get("data", {})], name
        shown = "".join(_text_of(o) for o in outputs)
        assert not [p for p in LOCAL_PATHS if p in shown], f"{name}: a local path in the outputs"
        assert "IProgress not found" not in shown, name
        # data and model come from the environment, never from a path on the author's machine
        source = "".join("".join(c["source"]) for c in code)
        assert "LATERAGKIT_DATA" in source and "/work/" not in source and "/home/" not in source
    evaluation = json.loads((NOTEBOOKS / "04_evaluation.ipynb").read_text(encoding="utf-8"))
    assert any("image/png" in o.get("data", {}) for c in evaluation["cells"] if c["cell_type"] == "code"
               for o in c["outputs"]), "04_evaluation.ipynb: the plot is not stored"


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
    committed = hashlib.sha256((NOTEBOOKS / name).read_bytes()).hexdigest()
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:  # run from a clean copy: the stored outputs must be reproduced, not kept
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute(cwd=str(tmp_path))
    assert hashlib.sha256((NOTEBOOKS / name).read_bytes()).hexdigest() == committed, "the committed file changed"
    # every code cell ran, none raised (nbclient raises CellExecutionError on the first error)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    outputs = [o for c in code for o in c.outputs]
    assert not any(o.get("output_type") == "error" for o in outputs)
    # tqdm draws real progress bars: no "IProgress not found" warning (ipywidgets is in the notebook extra)
    assert not any("IProgress not found" in _text_of(o) for o in outputs)
    if name == "01_quickstart.ipynb" and _find("ipywidgets"):
        assert any(WIDGET_MIME in o.get("data", {}) for o in outputs), "no progress-bar widget was shown"
    if name == "04_evaluation.ipynb":
        assert any("image/png" in o.get("data", {}) for o in outputs), "the plot was not drawn"
