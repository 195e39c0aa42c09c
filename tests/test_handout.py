"""tools/make_handout.py and the autograder: built into a temporary folder, self-checked, inspected.

One build (with make_handout's own self-checks: the stub fails each test with "<name>: not
implemented yet", the solution passes, the autograder gives full and zero marks) serves most tests.
"""

from __future__ import annotations

import ast
import configparser
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "tools" / "autograder")]

import grade  # noqa: E402
import make_handout  # noqa: E402

FULL = sum(grade.POINTS.values())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    report = make_handout.build(ROOT, out)
    return out, report


@pytest.mark.slow
def test_handout_holds_what_students_need_and_nothing_else(built):
    out, _ = built
    handout = out / "handout"
    files = sorted(str(p.relative_to(handout)) for p in handout.rglob("*") if p.is_file())
    assert files == make_handout.handout_files(ROOT)  # the list defined in one place
    for needed in ("diffusion.py", "unet.py", "test_diffusion.py", "requirements.txt", "data/reference/public.pt"):
        assert needed in files
    for optional in make_handout.EXPECTED:
        assert (optional in files) == (ROOT / optional).is_file()
    for path in files:
        assert path.split("/")[0] not in ("tools", "tests", "bench", ".ci") and "hidden" not in path, path
        assert "__pycache__" not in path and ".pytest_cache" not in path, path  # self-checks left nothing behind


STUDENT_SECTIONS = ("## Set-up", "## What you write", "## Checking your functions", "## Training",
                    "## What to hand in", "## Troubleshooting")
# Words that only instructor, CI or benchmark material uses: none may reach the student README.
INSTRUCTOR_WORDS = ("instructor", "tools/", "tests/", "bench/", ".ci/", "SMOKE_TEST", "nbmake", "hidden.pt", "lucidrains")


@pytest.mark.slow
def test_every_module_the_handout_imports_at_load_time_ships_with_it(built):
    """trainer.py and the rest import a module per concern at their top: each must be in the handout, or
    `python main.py` fails there with an ImportError. (Imports inside functions are a part's optional files.)"""
    out, _ = built
    handout = out / "handout"
    ours = {p.stem for p in ROOT.glob("*.py")}
    for path in handout.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top in ours:
                    assert (handout / f"{top}.py").is_file(), f"{path.name} imports {top}, which the handout lacks"


@pytest.mark.slow
def test_readme_keeps_student_sections_and_drops_instructor_only_ones(built):
    out, _ = built
    source = (ROOT / "README.md").read_text()
    handout = (out / "handout" / "README.md").read_text()
    assert "<!-- instructor-only -->" in source and "tools/make_handout.py" in source
    assert [s for s in STUDENT_SECTIONS if s in handout] == list(STUDENT_SECTIONS)
    assert [w for w in INSTRUCTOR_WORDS if w in handout.lower()] == []
    assert len(handout.splitlines()) < 250, "a student reads the README in about ten minutes"
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in handout


@pytest.mark.parametrize("parts", [(1,), (2,), (3,)])
def test_each_part_s_readme_is_short(parts):
    readme = make_handout.student_markdown((ROOT / "README.md").read_text(), parts)
    assert len(readme.splitlines()) < 250, f"the README of a Part {parts[0]} handout: a student reads it in ten minutes"


@pytest.mark.slow
def test_readme_names_only_what_the_handout_has(built):
    out, _ = built
    handout = out / "handout"
    text = (handout / "README.md").read_text()
    links = [link for link in re.findall(r"\]\(([^)#]+)\)", text) if "://" not in link]
    scripts = re.findall(r"python (\S+\.py)", text)
    assert scripts, "found no commands at all: the pattern above is broken"
    assert [path for path in links + scripts if not (handout / path).exists()] == []


@pytest.mark.slow
def test_sections_of_the_readme_that_the_code_names_exist(built):
    # Messages like `see README.md, section "Homework data"` must lead somewhere in the student's README.
    out, _ = built
    handout = out / "handout"
    headings = [line.lstrip("#").strip() for line in (handout / "README.md").read_text().splitlines()
                if line.startswith("#")]
    named = {m for path in handout.rglob("*.py") for m in
             re.findall(r'README(?:\.md)?(?:,| section| in)*\s*\\?"([^"\\]+)\\?"', path.read_text())}
    assert [name for name in named if not any(h.startswith(name) for h in headings)] == []


@pytest.mark.slow
def test_handout_pytest_ini_names_only_what_the_handout_has(built):
    out, _ = built
    ini = configparser.ConfigParser()
    ini.read(out / "handout" / "pytest.ini")
    testpaths = ini["pytest"]["testpaths"].split()
    assert "test_diffusion.py" in testpaths
    assert [path for path in testpaths if not (out / "handout" / path).exists()] == []


@pytest.mark.slow
def test_stub_replaces_every_solution_block(built):
    out, _ = built
    stub = (out / "handout" / "diffusion.py").read_text()
    assert "BEGIN SOLUTION" not in stub and "END SOLUTION" not in stub
    for function in grade.POINTS:
        assert f'raise NotImplementedError("{function}: not implemented yet")' in stub
        assert f"# TODO ({function}):" in stub
    solution = (ROOT / "diffusion.py").read_text()
    kept = solution.split("# BEGIN SOLUTION")[0]  # the provided part up to the first block is unchanged
    assert stub.startswith(kept)


@pytest.mark.slow
def test_self_checks_ran_and_results_follow_gradescope_format(built):
    _, report = built
    assert report["stub"].endswith("all fail with '<name>: not implemented yet'")
    assert report["solution"].endswith("tests pass")
    for run, expected in (("solution", "full"), ("stub", "zero")):
        results = report["results"][run]
        assert set(results) >= {"score", "output", "tests"}
        assert [t["name"] for t in results["tests"]] == list(grade.POINTS)
        for test in results["tests"]:
            assert set(test) >= {"name", "score", "max_score", "output", "visibility"}
            assert test["max_score"] == grade.POINTS[test["name"]]
            assert test["score"] == (test["max_score"] if expected == "full" else 0), (run, test)
        assert results["score"] == (FULL if expected == "full" else 0)
    stub_q_sample = report["results"]["stub"]["tests"][0]["output"]
    assert "q_sample: not implemented yet" in stub_q_sample and "Traceback" not in stub_q_sample


@pytest.mark.slow
def test_autograder_layout_and_zip(built):
    out, _ = built
    folder = out / "autograder"
    for name in ("setup.sh", "run_autograder", "grade.py", "parts.py", "sandbox.py", "requirements.txt", "student_requirements.txt",
                 "THREAT_MODEL.md", "grading/__init__.py", "grading/cases.py", "test_diffusion.py", "data/reference/public.pt", "reference/hidden.pt",
                 "provided/unet.py"):
        assert (folder / name).is_file(), name
    assert (folder / "test_diffusion.py").read_bytes() == (ROOT / "test_diffusion.py").read_bytes()
    assert (folder / "student_requirements.txt").read_bytes() == (ROOT / "requirements.txt").read_bytes()
    with zipfile.ZipFile(out / "autograder.zip") as archive:
        names = sorted(archive.namelist())
        assert names == sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        for script in ("setup.sh", "run_autograder"):  # at the zip's root, executable
            assert stat.S_IMODE(archive.getinfo(script).external_attr >> 16) & 0o111
    assert not any("diffusion.py" == Path(n).name for n in names)  # the solution is not shipped to Gradescope


@pytest.mark.slow
def test_autograder_charges_a_mistake_to_its_own_function(built, tmp_path):
    """A p_sample without the clamp loses p_sample's points only; the loop and sample keep theirs."""
    out, _ = built
    wrong = (ROOT / "diffusion.py").read_text() + '''

class GaussianDiffusion(GaussianDiffusion):  # the student's p_sample forgets the clamp
    @torch.no_grad()
    def p_sample(self, x, t, t_index):
        abar = extract(self.alphas_cumprod, t, x.shape)
        x0_hat = (x - (1 - abar).sqrt() * self.model(x, t)) / abar.sqrt()
        mean = extract(self.posterior_mean_coef_x0, t, x.shape) * x0_hat + extract(self.posterior_mean_coef_xt, t, x.shape) * x
        if t_index == 0:
            return mean
        return mean + extract(self.posterior_variance, t, x.shape).sqrt() * self.noise_like(x.shape, x.device)
'''
    (tmp_path / "submission" / "nested").mkdir(parents=True)
    (tmp_path / "submission" / "nested" / "diffusion.py").write_text(wrong)  # found in a subfolder too
    results_file = tmp_path / "results.json"
    assert grade.main(["--submission", str(tmp_path / "submission"), "--results", str(results_file),
                       "--reference", str(out / "autograder" / "reference" / "hidden.pt")]) == 0
    results = {t["name"]: t for t in json.loads(results_file.read_text())["tests"]}
    assert results["p_sample"]["score"] < grade.POINTS["p_sample"]
    assert "x0-hat not clamped" in results["p_sample"]["output"]
    for function in ("q_sample", "p_losses", "forward", "p_sample_loop", "sample"):
        assert results[function]["score"] == grade.POINTS[function], results[function]["output"]
    assert "Not counted here (caused by p_sample)" in results["p_sample_loop"]["output"]


@pytest.mark.slow
def test_autograder_without_a_diffusion_py(tmp_path):
    (tmp_path / "submission").mkdir()
    (tmp_path / "submission" / "notes.txt").write_text("oops")
    results_file = tmp_path / "results.json"
    assert grade.main(["--submission", str(tmp_path / "submission"), "--results", str(results_file)]) == 0
    results = json.loads(results_file.read_text())
    assert results["score"] == 0 and all(t["score"] == 0 for t in results["tests"])
    assert "No diffusion.py in your submission" in results["tests"][0]["output"]


def test_grading_policy_excuses_only_blamed_failures():
    def test(name, passed, blame=()):
        return {"name": name, "outcome": "passed" if passed else "failed", "message": "" if passed else f"{name} bad",
                "blame": list(blame)}

    outcomes = [
        test("test_p_sample[a]", False), test("test_p_sample[b]", True),
        test("test_p_sample_loop_steps[a]", True), test("test_p_sample_loop[a]", False, ["p_sample"]),
        test("test_sample_calls[a]", False), test("test_sample[a]", False, ["p_sample_loop", "p_sample"]),
        test("test_q_sample[a]", False, ["forward"]),  # blame on a function that passes: still counted
    ]
    scores = {t["name"]: t["score"] for t in grade.score(grade.PARTS["diffusion"], outcomes, "")}
    assert scores["p_sample"] == grade.POINTS["p_sample"] / 2
    assert scores["p_sample_loop"] == grade.POINTS["p_sample_loop"]  # its only failure is p_sample's doing
    assert scores["sample"] == 0  # its own spy test fails; the end-to-end one is excused
    assert scores["q_sample"] == 0 and scores["forward"] == 0 and scores["p_losses"] == 0  # no test ran: no points


@pytest.mark.slow
def test_an_infinite_loop_fails_one_test_instead_of_hanging(tmp_path):
    looping = (ROOT / "diffusion.py").read_text().replace("# BEGIN SOLUTION", "# BEGIN SOLUTION\n        while True:\n"
                                                          "            pass", 1)  # the first block: q_sample
    (tmp_path / "diffusion.py").write_text(looping)
    shutil.copy(ROOT / "test_diffusion.py", tmp_path)
    shutil.copytree(ROOT / "grading", tmp_path / "grading", ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, DIFFUSION_TEST_TIMEOUT="1", PYTHONDONTWRITEBYTECODE="1",
               DIFFUSION_REFERENCE=str(ROOT / "data" / "reference" / "public.pt"))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_diffusion.py",
                          "-k", "test_q_sample and t_0 or test_sample_calls"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert "q_sample: timed out after 1 s (an infinite loop?)" in run.stdout, run.stdout[-2000:]
    assert "1 failed, 2 passed" in run.stdout and "tensor(" not in run.stdout, run.stdout[-2000:]


def _fake_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for name in ("diffusion.py", "test_diffusion.py", "unet.py", "requirements.txt", "data/reference/public.pt",
                 "tools/reference/hidden.pt", *(f"grading/{m.name}" for m in (ROOT / "grading").glob("*.py"))):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, repo / name)
    return repo


def test_refuses_to_ship_a_solution_line(tmp_path, capsys):
    repo = _fake_repo(tmp_path)
    (repo / "README.md").write_text("Hint:\n    return self.p_losses(x_0, t, noise)\n")
    out = tmp_path / "out"
    assert make_handout.main([str(out), "--root", str(repo), "--no-check"]) == 1
    error = capsys.readouterr().err
    assert "refusing to finish" in error and "README.md: `return self.p_losses(x_0, t, noise)`" in error
    assert not (out / "handout").exists() and not (out / "autograder.zip").exists()
    assert not any(out.iterdir())  # the staging folder is gone too


def test_refuses_broken_markers_and_existing_output(tmp_path, capsys):
    repo = _fake_repo(tmp_path)
    source = (repo / "diffusion.py").read_text()
    (repo / "diffusion.py").write_text(source.replace("# END SOLUTION", "", 1))
    assert make_handout.main([str(tmp_path / "out"), "--root", str(repo), "--no-check"]) == 1
    assert "inside another solution block" in capsys.readouterr().err
    (repo / "diffusion.py").write_text(source)
    (tmp_path / "out" / "handout").mkdir(parents=True)
    assert make_handout.main([str(tmp_path / "out"), "--root", str(repo), "--no-check"]) == 1
    assert "exists: pass --force" in capsys.readouterr().err
    assert make_handout.main([str(tmp_path / "out"), "--root", str(repo), "--no-check", "--force"]) == 0
    assert (tmp_path / "out" / "handout" / "diffusion.py").is_file()
