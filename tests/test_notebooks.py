"""run_in_colab.ipynb and run_in_kaggle.ipynb, read without running them.

CI also runs both top to bottom in their smoke mode:
    SMOKE_TEST=1 pytest --nbmake run_in_colab.ipynb run_in_kaggle.ipynb
These checks are the cheap part: what a smoke run cannot see (cells it skips) or should not leave behind.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = ["run_in_colab.ipynb", "run_in_kaggle.ipynb"]
# Flags of the other commands the notebooks run: torchrun's and git clone's.
OTHER_FLAGS = {"standalone", "nproc_per_node", "depth"}


def code_cells(name: str) -> list[str]:
    # A notebook is JSON; each cell's source is stored as a list of lines (or one string).
    notebook = json.loads((REPO / name).read_text())
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]


def option_names(parser) -> set[str]:
    return {option[2:] for action in parser._actions for option in action.option_strings if option.startswith("--")}


def known_flags() -> set[str]:
    from main import build_parser

    flags = option_names(build_parser()) | OTHER_FLAGS
    for dataset in ("afhq", "cifar10"):
        spec = importlib.util.spec_from_file_location(f"prepare_{dataset}", REPO / "data" / dataset / "prepare.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        flags |= option_names(module.build_parser())
    return flags


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_valid_and_without_outputs(name):
    # The schema check needs nbformat, a dev-only package (Colab and Kaggle have it; CI installs it).
    nbformat = pytest.importorskip("nbformat", reason="dev-only: pip install -r requirements-dev.txt")
    notebook = nbformat.read(REPO / name, as_version=4)
    nbformat.validate(notebook)
    # nbmake and Colab pick the kernel by this name; "python3" is the standard one everywhere.
    assert notebook.metadata.kernelspec.name == "python3"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear the outputs before committing"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_code_cell_is_plain_python(name):
    # Plain Python (no ! or % lines) so that a cell skipped in smoke mode still cannot hide a syntax error.
    for source in code_cells(name):
        ast.parse(source)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_flag_the_notebook_passes_exists(name):
    # The smoke run skips FID; a renamed flag there would only show on a student's GPU.
    used = {m for source in code_cells(name) for m in re.findall(r"(?<![\w-])--([a-z][a-z_]*)", source)}
    assert used, "found no flags at all: the pattern above is broken"
    assert used - known_flags() == set()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_repository_url_is_set_in_one_place(name):
    settings = [source for source in code_cells(name) if re.search(r"^REPO_URL = ", source, re.MULTILINE)]
    assert len(settings) == 1 and "SMOKE_TEST" in "".join(code_cells(name))
