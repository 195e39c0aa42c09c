"""run_in_colab.ipynb and run_in_kaggle.ipynb: read, their run() helper, and run up to their test cell.

CI also runs both top to bottom in their smoke mode:
    SMOKE_TEST=1 pytest --nbmake run_in_colab.ipynb run_in_kaggle.ipynb
That run uses the repository's own diffusion.py. The tests here add what it cannot see: cells it skips,
what it should not leave behind, an interrupt of a running command, and the two ways a student's run
starts: on the handout's stub, and with the student's own diffusion.py supplied the way the notebook asks.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
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


def setup_cell(name: str) -> str:
    (cell,) = [source for source in code_cells(name) if "def run(" in source]
    return cell


# A stand-in for main.py: on Ctrl-C it "saves a checkpoint" and exits with 130, as main.py does.
CHILD = """
import sys, time
from pathlib import Path
try:
    print("ready", flush=True)  # inside the try: the interrupt may come as soon as this is read
    time.sleep(120)
except KeyboardInterrupt:
    Path("checkpoint.txt").write_text("saved")
    sys.exit(130)
"""
# The notebook's kernel: runs the setup cell, then the child through run(), shows what Jupyter would.
KERNEL = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a Jupyter kernel, even if started ignoring it
exec(sys.stdin.read())
try:
    run(f"{sys.executable} child.py")
except Stop as stop:
    print("\\n".join(stop._render_traceback_()))
"""


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_run_passes_an_interrupt_to_the_command(name, tmp_path):
    # The stop button interrupts the kernel alone; run() must pass it on, or training never saves.
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "kernel.py").write_text(KERNEL)
    kernel = subprocess.Popen([sys.executable, "kernel.py"], cwd=tmp_path, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, SMOKE_TEST="1"))
    kernel.stdin.write(setup_cell(name))
    kernel.stdin.close()
    kernel.stdin = None  # written and closed: communicate() below must not flush it
    lines = []
    while not lines or lines[-1].strip() != "ready":
        line = kernel.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
    kernel.send_signal(signal.SIGINT)
    output, _ = kernel.communicate(timeout=60)
    assert kernel.returncode == 0, output
    assert (tmp_path / "checkpoint.txt").read_text() == "saved"
    assert output.strip().splitlines()[-1].startswith("Stopped: you interrupted the command")
    assert "Traceback" not in output


def handout_copy(folder: Path) -> Path:
    """The student's handout (the stub diffusion.py and every file students get), in folder."""
    spec = importlib.util.spec_from_file_location("make_handout", REPO / "tools" / "make_handout.py")
    make_handout = sys.modules["make_handout"] = importlib.util.module_from_spec(spec)  # dataclasses need it there
    spec.loader.exec_module(make_handout)
    make_handout.build_handout(REPO, folder)
    return folder


def run_until_the_tests(name: str, folder: Path, monkeypatch, your_files: Path | None = None):
    """Run the notebook in smoke mode in folder, up to and including its test cell; its cells' outputs."""
    nbformat = pytest.importorskip("nbformat", reason="dev-only: pip install -r requirements-dev.txt")
    nbclient = pytest.importorskip("nbclient", reason="dev-only: pip install -r requirements-dev.txt")
    notebook = nbformat.read(REPO / name, as_version=4)
    last = max(i for i, cell in enumerate(notebook.cells) if "DIFFUSION_TEST_DEVICE" in cell.source)
    notebook.cells = notebook.cells[: last + 1]
    monkeypatch.setenv("SMOKE_TEST", "1")
    monkeypatch.setenv("SMOKE_YOUR_FILES", str(your_files or folder / "no-files"))
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(folder)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError:
        pass  # the error is in the cell's outputs, checked by the caller
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def printed(outputs) -> str:
    return "".join(output.get("text", "") for output in outputs if output.output_type == "stream")


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_on_the_stub_the_notebook_stops_with_one_line_naming_the_unwritten_functions(name, tmp_path, monkeypatch):
    folder = handout_copy(tmp_path / "handout")
    outputs = run_until_the_tests(name, folder, monkeypatch)
    errors = [output for output in outputs if output.output_type == "error"]
    assert [(e.ename, len(e.traceback)) for e in errors] == [("Stop", 1)], errors
    assert errors[0].traceback[0].startswith("Stopped: diffusion.py: not written yet: "
                                             "q_sample, p_losses, forward, p_sample, p_sample_loop, sample. ")
    assert "`pytest test_diffusion.py`" in errors[0].traceback[0]
    assert f"using diffusion.py: {(folder / 'diffusion.py').resolve()} (modified " in printed(outputs)
    assert "-m pytest" not in printed(outputs)  # stopped before running 30 failing tests


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_notebook_uses_the_newest_copy_of_diffusion_py_the_student_provided(name, tmp_path, monkeypatch):
    folder = handout_copy(tmp_path / "handout")
    solution = (REPO / "diffusion.py").read_text()
    your_files = tmp_path / "your-files"
    for age, label in ((7200, "older"), (3600, "newer")):  # seconds ago
        copy = your_files / label / "diffusion.py"
        copy.parent.mkdir(parents=True)
        copy.write_text(solution + f"# my {label} copy\n")
        os.utime(copy, (time.time() - age, time.time() - age))
    outputs = run_until_the_tests(name, folder, monkeypatch, your_files)
    assert [output for output in outputs if output.output_type == "error"] == []
    text = printed(outputs)
    assert f"using diffusion.py: {(your_files / 'newer' / 'diffusion.py').resolve()} (modified " in text
    assert (folder / "diffusion.py").read_text().endswith("# my newer copy\n")
    assert "All tests pass: on to training." in text
