"""Grade a whole class with the autograder, and show what the class got wrong (instructors only).

    python tools/grade_class.py SUBMISSIONS --out REPORT [--workers N] [--parts 1 2 3] [--autograder DIR]

SUBMISSIONS is a folder with one subfolder per student holding the files they handed in, or a
Gradescope "Export Submissions" folder or zip (its submission_metadata.yml names each subfolder's
submitters). Every submission is graded by the built autograder's own grade.py (default
dist/autograder/, from tools/make_handout.py), in a process of its own with its own sandbox, time
limits, hidden set and points: a student's total is what the autograder gives that submission alone.
N submissions are graded at a time (default: one per core).

Writes REPORT/grades.csv (student, total, points per function), REPORT/mistakes.csv (student, part,
function, mistake: each catalogued mistake the grader named, "unrecognised" for a failure it could
not name, and what stopped a function from being checked in parentheses) and REPORT/report.html
(class_mistakes.py reads what the class got wrong, class_report.py writes the files). The same folder
gives the same files. Bad input: one line, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import pwd
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tools"), str(ROOT)]  # class_report; the catalogues (tools.mistakes)

import class_mistakes  # noqa: E402
import class_report  # noqa: E402

DEFAULT_AUTOGRADER = ROOT / "dist" / "autograder"
METADATA = "submission_metadata.yml"
MAX_UNZIPPED = 4 * 2**30  # bytes: a class of homework files is far below this
FIRST_SANDBOX_UID = 61000  # each parallel grader's student code runs under its own uid from here (as root)

RUNNING: set = set()  # the grade.py processes running now (each in a session of its own)


class BadInput(Exception):
    """Ends the run with one line."""


@dataclass
class Submission:
    student: str
    folder: Path


@dataclass
class Graded:
    student: str
    results: dict | None = None  # results.json as grade.py wrote it; None if the grader failed
    seconds: float = 0.0
    fault: str = ""  # the grader's own failure (never charged to the student)
    flags: list[str] = field(default_factory=list)  # what a human should look at


# ---- the autograder build ------------------------------------------------------------------------

@dataclass
class Autograder:
    folder: Path
    parts: dict  # grade.py's PARTS that this build grades (the ones asked for)
    run_limit_s: float
    switches_user: bool  # whether the sandbox runs student code as another user (root and a usable Python)


def load_autograder(folder: Path, numbers: list[int] | None) -> Autograder:
    """grade.py's table of parts from the build, keeping those asked for."""
    if not (folder / "grade.py").is_file() or not (folder / "sandbox.py").is_file():
        raise BadInput(f"no autograder build at {folder} (no grade.py there): build one with "
                       "`python tools/make_handout.py dist --parts 1 2 3`, or pass --autograder DIR")
    spec = importlib.util.spec_from_file_location("built_grade", folder / "grade.py")
    grade = importlib.util.module_from_spec(spec)
    path, modules = list(sys.path), set(sys.modules)
    sys.modules["built_grade"] = grade  # dataclasses look their module up there
    try:
        spec.loader.exec_module(grade)  # reads its tables only: nothing is graded in this process
        switches_user = sys.modules["sandbox"]._can_switch_user()
    finally:  # the build's grading package and sandbox.py stay out of this process's later imports
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if folder in Path(getattr(sys.modules[name], "__file__", None) or "/").parents:
                del sys.modules[name]
    built = {name: part for name, part in grade.PARTS.items() if (folder / f"{part.tests}.py").is_file()}
    numbered = {part.number: name for name, part in grade.PARTS.items()}
    chosen = {}
    for number in numbers or [n for n, name in numbered.items() if name in built]:
        name = numbered.get(number)
        if name not in built:
            raise BadInput(f"the autograder at {folder} does not grade Part {number}: rebuild it with "
                           f"`python tools/make_handout.py dist --parts ... {number}`, or leave --parts out")
        chosen[name] = built[name]
    return Autograder(folder, chosen, float(grade.RUN_TIME_LIMIT_S), bool(switches_user))


# ---- finding the submissions ---------------------------------------------------------------------

def unzip(path: Path, into: Path) -> Path:
    try:
        with zipfile.ZipFile(path) as archive:
            if sum(info.file_size for info in archive.infolist()) > MAX_UNZIPPED:
                raise BadInput(f"{path} unpacks to more than {MAX_UNZIPPED // 2**30} GB: is it the right file?")
            archive.extractall(into)  # zipfile drops absolute paths and ".." from member names
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise BadInput(f"{path} is not a readable zip ({error}): pass the folder of submissions, or the zip "
                       "that Gradescope's Export Submissions gave you") from None
    return into


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))


def find_submissions(path: Path, scratch: Path) -> list[Submission]:
    """One Submission per student folder, sorted by student; a Gradescope export's names from its metadata."""
    if not path.exists():
        raise BadInput(f"{path} does not exist: pass the folder of submissions (one subfolder per student) or "
                       "Gradescope's export zip")
    if path.is_file():
        path = unzip(path, scratch / "unzipped")
    folders = _visible_dirs(path)
    if not (path / METADATA).is_file() and len(folders) == 1 and (folders[0] / METADATA).is_file():
        path, folders = folders[0], _visible_dirs(folders[0])  # the export's own top folder
    names = {folder.name: folder.name for folder in folders}
    if (path / METADATA).is_file():
        names.update(read_metadata(path / METADATA, path, scratch))
    if not names:
        raise BadInput(f"{path} holds no submissions: give it one subfolder per student, holding the files they "
                       "handed in (or Gradescope's export)")
    labels = list(names.values())
    submissions = []
    for folder_name, label in names.items():
        if labels.count(label) > 1:
            label = f"{label} ({folder_name})"  # two students of the same name
        folder = path / folder_name
        if not folder.is_dir():  # named in the metadata, absent from the export: graded as handing in nothing
            folder = scratch / "empty" / folder_name
            folder.mkdir(parents=True, exist_ok=True)
        submissions.append(Submission(label, folder))
    return sorted(submissions, key=lambda s: (s.student, str(s.folder)))


def read_metadata(path: Path, root: Path, scratch: Path) -> dict[str, str]:
    """{submission folder: "Name <email>" of its submitters} from Gradescope's submission_metadata.yml."""
    try:
        metadata = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise BadInput(f"{path} cannot be read ({type(error).__name__}): export the submissions again") from None
    if not isinstance(metadata, dict):
        raise BadInput(f"{path} is not Gradescope's submission metadata (a mapping of submission folders)")
    names = {}
    for folder, entry in metadata.items():
        submitters = entry.get(":submitters", []) if isinstance(entry, dict) else []
        people = [f"{s.get(':name', '?')} <{s.get(':email', '') or s.get(':sid', '')}>" for s in submitters
                  if isinstance(s, dict)]
        if "/" in str(folder) or str(folder).startswith("."):
            raise BadInput(f"{path} names a submission folder {folder!r}: export the submissions again")
        names[str(folder)] = " & ".join(people) or str(folder)
    return names


# ---- grading -------------------------------------------------------------------------------------

def sandbox_uids(workers: int) -> list[int]:
    """`workers` uids that no account uses, so that one submission's code cannot signal another's."""
    uids, uid = [], FIRST_SANDBOX_UID
    while len(uids) < workers:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            uids.append(uid)
        uid += 1
    return uids


def kill_user_processes(uid: int) -> int:
    """Kill whatever is left running as `uid` (a submission's code that escaped its process group)."""
    killed = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            real = next(line.split()[1] for line in status.read_text().splitlines() if line.startswith("Uid:"))
            if int(real) == uid:
                os.kill(int(status.parent.name), signal.SIGKILL)
                killed += 1
        except (OSError, StopIteration, ValueError):
            pass
    return killed


def run_grade(autograder: Autograder, args: list[str], slot: Path, uid: int | None, limit: float) -> tuple[int, str, bool]:
    """Run the build's grade.py with `args`: (exit status, its stderr's last line, whether it hit `limit`)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TMPDIR=str(slot / "tmp"))
    if uid is not None:
        env["AUTOGRADER_SANDBOX_USER"] = str(uid)
    process = subprocess.Popen([sys.executable, str(autograder.folder / "grade.py"), *args], env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    RUNNING.add(process)
    try:
        _, errors = process.communicate(timeout=limit)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, errors = process.communicate()
        timed_out = True
    finally:
        RUNNING.discard(process)
    lines = [line for line in errors.splitlines() if line.strip() and not line.startswith("sandbox: ")]
    return process.returncode, (lines[-1] if lines else ""), timed_out


def grade_one(autograder: Autograder, submission: Submission, slot: Path, uid: int | None) -> Graded:
    results = slot / "results" / "results.json"
    results.unlink(missing_ok=True)
    start = time.monotonic()
    status, last_line, timed_out = run_grade(
        autograder, ["--submission", str(submission.folder.resolve()), "--results", str(results),
                     "--parts", *autograder.parts], slot, uid, autograder.run_limit_s + 120)
    graded = Graded(submission.student, seconds=time.monotonic() - start)
    if uid is not None and kill_user_processes(uid):
        graded.flags.append("left processes running after grading (killed)")
    if timed_out:
        graded.flags.append(f"the whole run passed {autograder.run_limit_s:g} s: graded on what had finished")
    elif status != 0:
        graded.fault = last_line or f"grade.py ended with status {status}"
    graded.results = read_results(results) if not graded.fault else None
    if graded.results is None and not graded.fault:
        graded.fault = "grade.py wrote no readable results.json"
    return graded


def read_results(path: Path) -> dict | None:
    try:
        results = json.loads(path.read_text())
        tests = [{"name": str(t["name"]), "score": float(t["score"]), "max_score": float(t["max_score"]),
                  "output": str(t.get("output", ""))} for t in results["tests"]]
        return {"score": float(results["score"]), "tests": tests, "output": str(results.get("output", ""))}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_sandbox(autograder: Autograder, scratch: Path, uid: int | None) -> None:
    slot = make_slot(scratch, "check")
    status, last_line, _ = run_grade(autograder, ["--check"], slot, uid, 300)
    if status != 0:
        raise BadInput(last_line or f"the autograder's sandbox check ended with status {status}")


def make_slot(scratch: Path, name: str) -> Path:
    """A folder per parallel grader: tmp/ (its sandboxes, which the sandbox user must reach) and results/
    (root's alone when grading as root)."""
    slot = scratch / name
    (slot / "results").mkdir(parents=True)
    (slot / "tmp").mkdir()
    for folder in (scratch, slot, slot / "tmp"):
        folder.chmod(0o711)  # traversable, not listable
    (slot / "results").chmod(0o700)
    return slot


def grade_all(autograder: Autograder, submissions: list[Submission], workers: int, scratch: Path) -> list[Graded]:
    uids = sandbox_uids(workers) if autograder.switches_user else [None] * workers
    if uids[0] is not None:
        for uid in uids:
            kill_user_processes(uid)
    check_sandbox(autograder, scratch, uids[0])
    slots: queue.Queue = queue.Queue()
    for i, uid in enumerate(uids):
        slots.put((make_slot(scratch, f"slot{i}"), uid))

    def task(submission: Submission) -> Graded:
        slot, uid = slots.get()
        try:
            return grade_one(autograder, submission, slot, uid)
        finally:
            slots.put((slot, uid))

    done = []
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(total=len(submissions), unit="submission",
                                                               desc="grading", file=sys.stderr) as progress:
        try:
            for future in as_completed([pool.submit(task, s) for s in submissions]):
                done.append(future.result())
                progress.update()
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            for process in list(RUNNING):  # grade.py and its sandboxes live in sessions of their own
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise
    return sorted(done, key=lambda g: g.student)


# ---- the command ---------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Grade a class of submissions with the autograder; write a report.")
    parser.add_argument("submissions", type=Path, help="a folder of student subfolders, or Gradescope's export (folder or zip)")
    parser.add_argument("--out", type=Path, required=True, help="the report folder (grades.csv, mistakes.csv, report.html)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="submissions graded at a time (default: cores)")
    parser.add_argument("--parts", type=int, nargs="+", default=None, help="the parts to grade (default: all the build has)")
    parser.add_argument("--autograder", type=Path, default=DEFAULT_AUTOGRADER,
                        help=f"the built autograder folder (default: {DEFAULT_AUTOGRADER.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="grade-class-"))
    try:
        if args.workers < 1:
            raise BadInput(f"--workers {args.workers}: give at least 1")
        if args.out.exists() and not args.out.is_dir():
            raise BadInput(f"--out {args.out} is a file: give a folder for the report")
        submissions = find_submissions(args.submissions.resolve(), scratch)
        autograder = load_autograder(args.autograder.resolve(), args.parts)
        known = class_mistakes.catalogue(autograder)
        if not autograder.switches_user:
            print("grade_class: the sandbox runs student code as you, not as a user of its own (see "
                  "tools/autograder/THREAT_MODEL.md): a hostile submission could disturb others graded at the same "
                  "time. For an untrusted class, grade as root with a Python every user can run.", file=sys.stderr)
        start = time.monotonic()
        graded = grade_all(autograder, submissions, min(args.workers, len(submissions)), scratch)
        seconds = time.monotonic() - start
    except BadInput as error:
        print(f"grade_class: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grade_class: interrupted; no report written", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = class_mistakes.summarise(graded, submissions, autograder, known, args.submissions)
    class_report.write_report(report, args.out)
    print_summary(report, graded, seconds, args.workers, args.out)
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def print_summary(report: dict, graded: list[Graded], seconds: float, workers: int, out: Path) -> None:
    totals = [s["total"] for s in report["students"] if s["total"] is not None]
    possible = sum(points for _, points in report["entries"])
    print(f"graded {len(graded)} submissions in {seconds:.0f} s on {workers} workers "
          f"({sum(g.seconds for g in graded) / max(len(graded), 1):.1f} s each)")
    if totals:
        print(f"mean {sum(totals) / len(totals):.1f} of {possible:g}; full marks: "
              f"{sum(t == possible for t in totals)} of {len(totals)}")
    for m in report["mistakes"][:3]:
        print(f"  {len(m['students']):>3} x {m['part']} {m['function']}: {m['title']}")
    faults = sum(1 for g in graded if g.fault)
    print(f"need a look: {len(report['problems'])}" + (f" (the grader failed on {faults}: regrade them)" if faults else ""))
    print(f"wrote {out / 'grades.csv'}, {out / 'mistakes.csv'} and {out / 'report.html'}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)  # a killed run stops its graders too
    sys.exit(main())
