"""The tutorials are stored as plain notebooks without outputs (nbmake executes them; see notebooks/README.md)."""

import json
import pathlib

import pytest

HERE = pathlib.Path(__file__).parent
NOTEBOOKS = sorted(HERE.glob("*.ipynb"))


def test_there_are_tutorials():
    assert len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_clean(path):
    """No outputs or execution counts (diffs stay readable, nothing stale is shown), the standard kernel, and a
    place in the README's table."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None, f"{path.name} cell {index} has outputs"
    assert f"({path.name})" in (HERE / "README.md").read_text(encoding="utf-8"), f"{path.name} is not in README.md"
