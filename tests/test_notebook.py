"""The receptive-field notebook runs top to bottom, headless, so it cannot rot."""
import importlib.util
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOK = NOTEBOOKS / "receptive_field.ipynb"


def _require(*modules):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the notebook needs {', '.join(missing)} (pip install -e '.[notebooks]')")


def _builder():
    sys.path.insert(0, str(NOTEBOOKS))
    try:
        import build_receptive_field
    finally:
        sys.path.remove(str(NOTEBOOKS))
    return build_receptive_field


def test_committed_notebook_matches_its_builder():
    _require("nbformat")
    import nbformat
    committed = nbformat.read(NOTEBOOK, as_version=4)
    built = _builder().build()
    assert [(c.cell_type, c.source) for c in committed.cells] == \
        [(c.cell_type, c.source) for c in built.cells], \
        "notebook and notebooks/build_receptive_field.py differ: run it with --execute"
    # outputs are committed (the notebook is also documentation)
    assert any(c.get("outputs") for c in committed.cells if c.cell_type == "code")


def test_notebook_executes(tmp_path):
    _require("nbclient", "nbformat", "matplotlib", "ipykernel", "matplotlib_inline")
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    if "python3" not in KernelSpecManager().find_kernel_specs():
        pytest.skip("no 'python3' Jupyter kernel (python -m ipykernel install --sys-prefix)")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # raises CellExecutionError, naming the cell, if any cell fails; cwd is a scratch folder so
    # the run writes nothing into the checkout
    _builder().execute(nb, tmp_path, timeout=300)
    text = "\n".join(o.get("data", {}).get("text/markdown", "") + o.get("text", "")
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    # the notebook's own check: every measured field lies inside the theoretical one
    assert "inside theory" in text and "| NO |" not in text
    assert "notebook ran in" in text
