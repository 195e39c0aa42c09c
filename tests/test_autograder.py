"""The autograder on broken, hostile and unusual submissions (tests/submissions/*.txt).

Each submission is graded by grade.main as on Gradescope: the tests and the hidden reference in
this process, the submission's code in grade.py's sandbox process. (As root with a Python every
user can run, the sandbox also switches to `nobody`; THREAT_MODEL.md says what was verified where.)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBMISSIONS = Path(__file__).resolve().parent / "submissions"
pytestmark = pytest.mark.slow  # every test here runs the autograder on a submission (seconds each)
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "tools" / "autograder")]

import grade  # noqa: E402
import make_handout  # noqa: E402

FULL = sum(grade.POINTS.values())


def submission_source(name: str) -> tuple[str, str]:
    """(file name, text) of a catalogued submission: the solution or the stub with the snippet appended."""
    snippet = (SUBMISSIONS / f"{name}.txt").read_text()
    solution = (ROOT / "diffusion.py").read_text()
    base = make_handout.stub_solution(solution)[0] if snippet.startswith("# base: stub") else solution
    file_name = re.search(r"^# file: (\S+)", snippet, re.M)
    text = snippet if name == "syntax_error" else base + "\n\n" + snippet
    return (file_name.group(1) if file_name else "diffusion.py"), text


def grade_submission(name: str, tmp_path: Path) -> dict:
    file_name, text = submission_source(name)
    (tmp_path / "submission").mkdir()
    (tmp_path / "submission" / file_name).write_text(text)
    results = tmp_path / "results" / "results.json"
    assert grade.main(["--submission", str(tmp_path / "submission"), "--results", str(results), "--parts", "diffusion"]) == 0
    return json.loads(results.read_text())


def scores(results: dict) -> dict[str, float]:
    return {t["name"]: t["score"] for t in results["tests"]}


@pytest.mark.parametrize("cheat", ["cheat_read_hidden", "cheat_patch_checks", "cheat_rewrite_results"])
def test_cheats_earn_no_more_than_their_honest_code(cheat, tmp_path):
    """Each cheat sits on the stub, whose honest score is 0."""
    results = grade_submission(cheat, tmp_path)
    assert results["score"] == 0, scores(results)
    assert json.loads((tmp_path / "results" / "results.json").read_text())["score"] == 0  # not rewritten at exit


def test_a_hang_costs_only_the_function_and_its_callers(tmp_path, monkeypatch):
    monkeypatch.setattr(grade, "CALL_TIME_LIMIT_S", 1.0)
    results = grade_submission("hang_p_sample", tmp_path)
    got = scores(results)
    assert got["p_sample"] == 0
    for function in ("q_sample", "p_losses", "forward"):
        assert got[function] == grade.POINTS[function]
    # The loop and sample are judged with a stand-in p_sample too: only their end-to-end checks are lost.
    assert got["p_sample_loop"] == grade.POINTS["p_sample_loop"] and got["sample"] == grade.POINTS["sample"]
    p_sample = next(t for t in results["tests"] if t["name"] == "p_sample")["output"]
    assert "timed out after 1 s" in p_sample and "tensor(" not in p_sample


def test_any_import_the_student_requirements_allow_is_fine(tmp_path):
    assert grade_submission("tqdm_loop", tmp_path)["score"] == FULL


@pytest.mark.parametrize("name, says", [
    ("syntax_error", "Nothing could be checked: diffusion.py line 2: SyntaxError"),
    ("import_error", "Nothing could be checked: diffusion.py line"),
    ("wrong_file_name", "No diffusion.py in your submission (you uploaded: my_diffusion.py)"),
])
def test_unrunnable_submissions_get_one_short_honest_message(name, says, tmp_path):
    results = grade_submission(name, tmp_path)
    assert results["score"] == 0
    assert says in results["output"] and "hidden inputs" not in results["output"], results["output"]
    for test in results["tests"]:
        assert says in test["output"] and "Traceback" not in test["output"] and len(test["output"]) < 400


@pytest.mark.parametrize("python", ["fails_to_import_torch", "not_executable"])
def test_a_sandbox_that_cannot_start_scores_no_one(python, tmp_path, monkeypatch, capsys):
    """An interpreter the sandbox's user cannot run, or whose torch it cannot read (a venv under a mode-700
    folder), is the grader's fault: one line naming it, exit status 2, no results.json, also for the solution."""
    import sandbox
    fake = tmp_path / python
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named torch' >&2\nexit 1\n")
    fake.chmod(0o755 if python == "fails_to_import_torch" else 0o644)
    monkeypatch.setattr(sandbox, "PYTHON", str(fake))
    (tmp_path / "submission").mkdir()
    (tmp_path / "submission" / "diffusion.py").write_text((ROOT / "diffusion.py").read_text())
    results = tmp_path / "results" / "results.json"
    status = grade.main(["--submission", str(tmp_path / "submission"), "--results", str(results), "--parts", "diffusion"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("grade.py")]
    assert status == 2 and not results.exists()
    assert len(errors) == 1 and str(fake) in errors[0] and "No scores were written" in errors[0], errors
    assert ("No module named torch" if python == "fails_to_import_torch" else "Permission denied") in errors[0]
    assert grade.main(["--check"]) == 2
