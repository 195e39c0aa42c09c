"""tools/grade_class.py: a class graded in parallel gets exactly the autograder's grades, and a report.

The slow test builds the autograder (Part 1) and a class of 21: correct ones, catalogued mistakes
planted in several students, an unnamed mistake, a hang, a crash, a syntax error, a missing file,
an empty folder, the stub and three cheats (tests/submissions/). Each total must equal what the
built grade.py gives that submission alone. The fast tests cover bad input and Gradescope's export.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBMISSIONS = Path(__file__).resolve().parent / "submissions"
sys.path[:0] = [str(ROOT / "tools")]

import grade_class  # noqa: E402
import make_handout  # noqa: E402

MSE = """
class GaussianDiffusion(GaussianDiffusion):
    def p_losses(self, x_0, t, noise):
        return F.mse_loss(self.model(self.q_sample(x_0, t, noise), t), noise)
"""
ONE_T = """
class GaussianDiffusion(GaussianDiffusion):
    def forward(self, x_0, noise=None):
        t = torch.randint(0, self.num_timesteps, (1,), device=x_0.device).expand(x_0.shape[0])
        return self.p_losses(x_0, t, self.noise_like(x_0.shape, x_0.device) if noise is None else noise)
"""
EXITS = """
class GaussianDiffusion(GaussianDiffusion):
    @torch.no_grad()
    def p_sample(self, x, t, t_index):
        import os
        os._exit(3)
"""
# student -> a snippet of tests/submissions/ (appended to the solution or the stub), inline code, or None (nothing)
CLASS = {
    "ada": "correct", "ben": "tqdm_loop", "cy": "solution",
    "dee": "q_sample_alphas", "eli": "q_sample_alphas", "fox": "q_sample_alphas", "gil": "q_sample_alphas",
    "hal": MSE, "ivy": MSE, "jo": ONE_T, "kim": "double_sqrt",
    "lou": "hang_p_sample", "max": EXITS, "una": "crash_p_sample", "ned": "syntax_error", "oli": "wrong_file_name",
    "pat": None, "quinn": "stub",
    "ray": "cheat_rewrite_results", "sam": "cheat_patch_checks", "tess": "cheat_read_hidden",
}
TAMPERERS = ("ray", "sam", "tess")  # each sits on the stub: honest points 0
# Reading the hidden set from disk is stopped by file permissions only, i.e. where the sandbox runs student code
# as a user of its own (as root with a Python every user can run). Elsewhere it reads whatever the grader's user
# can (THREAT_MODEL.md): there tess is left out.


def source(what: str) -> tuple[str, str]:
    """(file name, text) of a class member's submission."""
    solution = (ROOT / "diffusion.py").read_text()
    stub = make_handout.stub_solution(solution)[0]
    if what in ("solution", "stub"):
        return "diffusion.py", solution if what == "solution" else stub
    if "\n" in what:
        return "diffusion.py", solution + "\n" + what
    snippet = (SUBMISSIONS / f"{what}.txt").read_text()
    name = re.search(r"^# file: (\S+)", snippet, re.M)
    base = stub if snippet.startswith("# base: stub") else solution
    return (name.group(1) if name else "diffusion.py"), snippet if what == "syntax_error" else base + "\n\n" + snippet


def make_class(folder: Path, members: dict) -> Path:
    for student, what in members.items():
        (folder / student).mkdir(parents=True)
        if what is not None:
            name, text = source(what)
            (folder / student / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def autograder(tmp_path_factory) -> Path:
    """The Part 1 autograder, built as an instructor builds it; one call of student code may take 1 s (the hang)."""
    out = tmp_path_factory.mktemp("dist")
    make_handout.build(ROOT, out, check=False, parts=(1,))
    for tree in ("handout", "autograder"):
        assert not [p for p in (out / tree).rglob("*") if p.name in ("grade_class.py", "class_report.py")]
    grade_py = out / "autograder" / "grade.py"
    text = grade_py.read_text()
    assert "CALL_TIME_LIMIT_S = 5.0" in text
    grade_py.write_text(text.replace("CALL_TIME_LIMIT_S = 5.0", "CALL_TIME_LIMIT_S = 1.0"))
    return out / "autograder"


def run_class(folder: Path, out: Path, autograder: Path, workers: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "grade_class.py"), str(folder), "--out", str(out),
                           "--autograder", str(autograder), "--workers", str(workers)],
                          capture_output=True, text=True, timeout=2000, env={**os.environ, "OMP_NUM_THREADS": "1"})


def alone(autograder: Path, submission: Path, results: Path) -> float:
    """The autograder's total for one submission graded by itself."""
    subprocess.run([sys.executable, str(autograder / "grade.py"), "--submission", str(submission), "--results",
                    str(results)], capture_output=True, timeout=1200, check=True)
    return json.loads(results.read_text())["score"]


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.timeout(2400)  # 21 submissions in the class, then the distinct ones alone, on 2 shared cores
def test_a_class_gets_the_autograders_grades_and_a_report(autograder, tmp_path):
    members = dict(CLASS)
    if not grade_class.load_autograder(autograder, None).switches_user:
        del members["tess"]
    folder = make_class(tmp_path / "class", members)
    run = run_class(folder, tmp_path / "report", autograder)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "wrote" in run.stdout and "Traceback" not in run.stderr
    grades = {r["student"]: r for r in rows(tmp_path / "report" / "grades.csv")}
    assert sorted(grades) == sorted(members)
    assert list(rows(tmp_path / "report" / "grades.csv")[0])[:3] == ["student", "total", "q_sample"]

    # Every total is the autograder's for that submission alone (one run per distinct submission).
    distinct = {}
    for student, what in members.items():
        distinct.setdefault(what, student)
    with ThreadPoolExecutor(2) as pool:
        solo = dict(zip(distinct, pool.map(lambda w: alone(autograder, folder / distinct[w], tmp_path / f"{distinct[w]}.json"),
                                            distinct)))
    for student, what in members.items():
        assert float(grades[student]["total"]) == pytest.approx(solo[what], abs=0.006), (student, what)
    assert float(grades["ada"]["total"]) == 100 and float(grades["dee"]["total"]) < 100
    for tamperer in set(TAMPERERS) & set(members):
        assert float(grades[tamperer]["total"]) <= solo["stub"] == 0

    # The planted mistakes, ranked by how many students made them.
    mistakes = rows(tmp_path / "report" / "mistakes.csv")
    made = {(m["student"], m["function"], m["mistake"]) for m in mistakes}
    assert {s for s, f, m in made if m == "alpha_t used where alpha-bar_t belongs"} == {"dee", "eli", "fox", "gil"}
    assert {s for s, f, m in made if m == "MSE instead of L1"} == {"hal", "ivy"}
    assert ("jo", "forward", "one t for the whole batch") in made
    assert ("kim", "p_sample", "unrecognised") in made
    assert ("max", "p_sample", "(crashed the process)") in made
    assert ("lou", "p_sample", "(timed out)") in made and ("oli", "q_sample", "(file missing)") in made
    page = (tmp_path / "report" / "report.html").read_text()
    ranked = [page.index(title) for title in ("alpha_t used where alpha-bar_t belongs", "MSE instead of L1",
                                              "one t for the whole batch")]
    assert ranked == sorted(ranked)
    look = page[page.index("need a look</h2>"):page.index("Every student")]
    for student in {"lou", "max", "ned", "oli", "pat", "ray", "sam"} & set(members):
        assert f"<td>{student}</td>" in look, student
    assert "atexit" in look
    assert not [thing for thing in ("<script", "src=", "<link", "url(", "@import") if thing in page]  # nothing to fetch


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_same_folder_gives_the_same_report(autograder, tmp_path):
    folder = make_class(tmp_path / "class", {"ada": "correct", "dee": "q_sample_alphas", "oli": "wrong_file_name"})
    for workers, out in ((1, "one"), (2, "two")):
        assert run_class(folder, tmp_path / out, autograder, workers).returncode == 0
    for name in ("grades.csv", "mistakes.csv", "report.html"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def bad(argv: list[str], capsys) -> str:
    assert grade_class.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("grade_class: ") and "Traceback" not in err[0], err
    return err[0]


def test_bad_input_gets_one_line(tmp_path, capsys):
    out = ["--out", str(tmp_path / "report")]
    assert "does not exist" in bad([str(tmp_path / "nowhere"), *out], capsys)
    (tmp_path / "empty").mkdir()
    assert "holds no submissions" in bad([str(tmp_path / "empty"), *out], capsys)
    (tmp_path / "class.zip").write_bytes(b"not a zip")
    assert "not a readable zip" in bad([str(tmp_path / "class.zip"), *out], capsys)
    make_class(tmp_path / "class", {"ada": "solution"})
    assert "no autograder build" in bad([str(tmp_path / "class"), *out, "--autograder", str(tmp_path)], capsys)
    assert "--workers 0" in bad([str(tmp_path / "class"), *out, "--workers", "0"], capsys)
    assert not (tmp_path / "report").exists()


def test_a_gradescope_export_names_its_submitters(tmp_path):
    export = tmp_path / "export"
    (export / "assignment_1_export" / "submission_1").mkdir(parents=True)
    (export / "assignment_1_export" / "submission_2").mkdir()
    (export / "assignment_1_export" / "submission_1" / "diffusion.py").write_text("pass\n")
    (export / "assignment_1_export" / "submission_metadata.yml").write_text(
        "submission_1:\n  :submitters:\n  - :name: Ada Lovelace\n    :email: ada@example.edu\n  :score: 1.0\n"
        "submission_2:\n  :submitters:\n  - :name: Ada Lovelace\n    :email: ada@example.edu\n"
        "submission_3:\n  :submitters:\n  - :name: Bo Li\n    :sid: '42'\n  - :name: Cy Xu\n    :email: cy@example.edu\n")
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in export.rglob("*"):
            z.write(path, path.relative_to(export))
    for given in (export, archive):
        found = grade_class.find_submissions(given, tmp_path / f"scratch-{given.suffix}")
        assert [s.student for s in found] == ["Ada Lovelace <ada@example.edu> (submission_1)",
                                              "Ada Lovelace <ada@example.edu> (submission_2)",
                                              "Bo Li <42> & Cy Xu <cy@example.edu>"]
        assert (found[0].folder / "diffusion.py").is_file()
        assert found[2].folder.is_dir() and not any(found[2].folder.iterdir())  # in the metadata only: nothing handed in


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_what_a_sandbox_uid_leaves_running_is_killed():
    """As root, each parallel grader's student code runs under an unused uid; whatever it leaves is killed."""
    uid = grade_class.sandbox_uids(1)[0]
    with pytest.raises(KeyError):
        __import__("pwd").getpwuid(uid)
    left = subprocess.Popen(["sleep", "60"], user=uid, group=uid, extra_groups=[], start_new_session=True)
    assert grade_class.kill_user_processes(uid) == 1
    assert left.wait(timeout=10) == -9
    assert grade_class.kill_user_processes(uid) == 0


def test_the_class_tools_stay_out_of_the_handout():
    shipped = make_handout.handout_files(ROOT, (1, 2, 3))
    assert "diffusion.py" in shipped
    assert not [f for f in shipped if Path(f).name in ("grade_class.py", "class_mistakes.py", "class_report.py")]
