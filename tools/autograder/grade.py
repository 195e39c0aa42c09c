"""Gradescope autograder: grade a submission with the parts' test files on the hidden references.

On Gradescope, run_autograder runs `python3 grade.py`: it reads /autograder/submission/ and writes
/autograder/results/results.json (one entry per function: name, score, max_score, status, output,
visibility; and the total score). Locally, from the repository or from a built autograder folder:

    python tools/autograder/grade.py --submission path/to/student/ --results /tmp/results.json

The tests run here, in the grader's process, with the hidden reference; every call of the
student's code runs in a sandbox process (sandbox.py: as the user `nobody` when this runs as root)
that sees the inputs of each case but never the expected outputs. results.json is rewritten after
each test, so whatever happens later, what finished is graded. THREAT_MODEL.md says what this holds.
If the sandbox itself cannot start Python and import torch (the grader's fault, never the student's),
grade.py stops with one line, exit status 2, and leaves no results.json; `--check` tries just that.

Partial credit and visibility are set just below; the parts, their points and files are the rows of
parts.py (beside this file), which make_handout.py reads too. A part is graded when its test file is present.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _first(*paths: Path) -> Path:
    return next((p for p in paths if p.exists()), paths[0])


# In a built autograder the files sit beside this script; in the repository they are where they live.
SOURCE = _first(HERE / "grading", HERE.parents[1] / "grading").parent
REFERENCES = _first(HERE / "reference", HERE.parent / "reference")
PROVIDED = _first(HERE / "provided", HERE.parents[1])  # unet.py etc., which a submission may import
sys.path[:0] = [str(SOURCE), str(HERE)]

from parts import PARTS, Part  # noqa: E402
from sandbox import Sandbox, SandboxBroken  # noqa: E402

import grading  # noqa: E402  (from SOURCE, found just above)

# ---- grading policy: edit here (the parts, their points and files: parts.py) ----------------------
PARTIAL_CREDIT = True  # a function earns the share of its checks that pass; False: all or nothing
VISIBILITY = "visible"  # Gradescope: visible, hidden, after_due_date or after_published
CALL_TIME_LIMIT_S = 5.0  # per call of the student's code; every call of a correct submission takes < 0.2 s
RUN_TIME_LIMIT_S = 900  # for everything; tests not run by then count as failed
# ----------------------------------------------------------------------------------------------

POINTS = PARTS["diffusion"].points  # Part 1's table (make_handout.py checks the stub against it)
OUTPUT_LIMIT = 8000  # characters of feedback per function
ROOT = Path(os.environ.get("AUTOGRADER_ROOT", "/autograder"))


def function_of(test_name: str, points: dict = POINTS) -> str | None:
    """test_p_sample_loop_steps[...] -> p_sample_loop: the longest function name the test is named after."""
    name = test_name.split("[")[0].removeprefix("test_")
    return next((f for f in sorted(points, key=len, reverse=True) if name == f or name.startswith(f + "_")), None)


def find_submission(path: Path, name: str) -> Path | None:
    if path.is_file():
        return path if path.name == name or name == "diffusion.py" else None
    direct = path / name
    if direct.is_file():
        return direct
    found = sorted((p for p in path.rglob(name) if "__MACOSX" not in p.parts), key=lambda p: len(p.parts))
    return found[0] if found else None


def _uploaded(path: Path) -> str:
    names = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path.name]
    return ", ".join(names[:8]) + (" ..." if len(names) > 8 else "") if names else "nothing"


def grade_part(part: Part, submission: Path, results_path: Path, entries_so_far: list, deadline: float) -> list[dict]:
    """Run one part's tests against the submission in a sandbox; the part's Gradescope entries."""
    files, missing = {}, []
    for name in part.student_files:
        found = find_submission(submission, name)
        if found is None:
            missing.append(name)
        else:
            files[name] = found
    if missing:
        problem = (f"No {' or '.join(missing)} in your submission (you uploaded: {_uploaded(submission)}). "
                   f"Upload {', '.join(part.student_files)} itself, with that name.")
        return score(part, [], problem)
    for provided in PROVIDED.glob("*.py"):
        if provided.name not in files and not provided.name.startswith("test_"):
            files.setdefault(provided.name, provided)
    files.update(grading_files())
    files[f"{part.tests}.py"] = SOURCE / f"{part.tests}.py"
    files[part.public] = _first(SOURCE / part.public, HERE / "public" / Path(part.public).name)
    modules = sorted({module for module, _ in part.classes.values()})
    sandbox = Sandbox.prepare(files, modules, CALL_TIME_LIMIT_S)
    grading.TIME_LIMIT_S = CALL_TIME_LIMIT_S
    records: list[dict] = []
    try:
        sandbox.start()
        if sandbox.import_error:
            return score(part, [], f"Nothing could be checked: {sandbox.import_error}")
        grading.SANDBOX = sandbox  # the test module's own import of the student's class stays a placeholder
        tests = importlib.import_module(part.tests)
        reference = grading.load_reference(REFERENCES / part.reference)
        fixtures = {name: grading.RemoteClass(module, cls, sandbox) for name, (module, cls) in part.classes.items()}
        collected = grading.collect(tests, reference)
        runs = grading.run_tests(tests, fixtures, reference)
        for test_id, _, _ in collected:
            if time.monotonic() > deadline:
                records.append({"name": test_id, "outcome": "failed", "blame": [],
                                "message": f"not run: the whole run reached its {RUN_TIME_LIMIT_S} s limit"})
                continue
            records.append(next(runs))
            write_results(results_path, entries_so_far + score(part, records, ""), partial=True)
    finally:
        grading.SANDBOX = None
        sandbox.close()
    return score(part, records, "")


def score(part: Part, tests: list[dict], problem: str) -> list[dict]:
    """Gradescope's entries for one part from its tests' outcomes."""
    failed_functions = {function_of(t["name"], part.points) for t in tests if t["outcome"] != "passed"}
    entries = []
    for function, points in part.points.items():
        mine = [t for t in tests if function_of(t["name"], part.points) == function]
        # An end-to-end check that fails only because a function it calls is wrong is not charged
        # here: that function loses its own points.
        excused = [t for t in mine if t["outcome"] != "passed" and t["blame"]
                   and all(b in failed_functions for b in t["blame"])]
        counted = [t for t in mine if t not in excused]
        passed = [t for t in counted if t["outcome"] == "passed"]
        share = len(passed) / len(counted) if counted else 0.0
        earned = points * (share if PARTIAL_CREDIT else float(share == 1.0))
        if problem or not mine:
            output = f"{function}: not checked. {problem or 'No test ran.'}".strip()
        else:
            lines = [f"{len(passed)} of {len(counted)} checks passed."]
            messages = [t["message"].strip() for t in counted if t["outcome"] != "passed"]
            lines += [m + (f"  ({messages.count(m)} checks)" if messages.count(m) > 1 else "")
                      for m in dict.fromkeys(messages)]  # each distinct message once, in order
            lines += [f"Not counted here (caused by {', '.join(t['blame'])}): {t['name']}" for t in excused]
            output = "\n\n".join(lines)
        if len(output) > OUTPUT_LIMIT:
            output = output[:OUTPUT_LIMIT] + "\n... (cut; run pytest for the rest)"
        entries.append({"name": f"{part.title}: {function}" if part.title else function, "score": round(earned, 2),
                        "max_score": points, "status": "passed" if earned == points else "failed",
                        "output": output, "visibility": VISIBILITY, "problem": problem})
    return entries


def write_results(path: Path, entries: list[dict], partial: bool = False, seconds: float | None = None) -> dict:
    total = round(sum(e["score"] for e in entries), 2)
    possible = sum(e["max_score"] for e in entries)
    problems = list(dict.fromkeys(e["problem"] for e in entries if e["problem"]))
    if problems:
        summary = f"Score {total} of {possible}. " + " ".join(problems)
    else:
        summary = (f"Score {total} of {possible}. Your code was checked with the handout's test files on hidden inputs "
                   "(other shapes and values than data/reference/). Run pytest on the test files for the same checks "
                   "on the public set.")
    if partial:
        summary += " (Grading was still running when this was written.)"
    results = {"score": total, "output": summary, "stdout_visibility": "hidden",
               "tests": [{k: v for k, v in e.items() if k != "problem"} for e in entries]}
    if seconds is not None:
        results["execution_time"] = round(seconds, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(results, indent=1))
    temporary.replace(path)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Grade a submission; write Gradescope's results.json.")
    parser.add_argument("--submission", type=Path, default=ROOT / "submission",
                        help="the submission folder or the file itself (default: $AUTOGRADER_ROOT/submission)")
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "results.json",
                        help="where to write results.json (default: $AUTOGRADER_ROOT/results/results.json)")
    parser.add_argument("--reference", type=Path, default=None,
                        help="Part 1's reference file (default: the hidden set)")
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=None,
                        help="grade only these parts (default: every part whose test file is here)")
    parser.add_argument("--check", action="store_true", help="only check that the sandbox can run; grade nothing")
    args = parser.parse_args(argv)
    if args.check:
        return check_sandbox()
    parts = {name: part for name, part in PARTS.items() if (SOURCE / f"{part.tests}.py").is_file()
             and (args.parts is None or name in args.parts)}
    if args.reference is not None:
        parts["diffusion"] = replace(parts["diffusion"], hidden=str(args.reference.resolve()))
    for part in parts.values():
        if not (REFERENCES / part.reference).is_file():
            print(f"grade.py: {REFERENCES / part.reference} is missing; rebuild the autograder with "
                  "tools/make_handout.py", file=sys.stderr)
            return 2
    _protect(REFERENCES)
    start = time.monotonic()
    entries: list[dict] = []
    try:
        for part in parts.values():
            entries += grade_part(part, args.submission, args.results, entries, start + RUN_TIME_LIMIT_S)
    except SandboxBroken as error:
        args.results.unlink(missing_ok=True)  # scores from a broken grader are no scores
        print(f"grade.py: cannot grade: {error}. Install Python and torch where that user can run and read them "
              "(not under a mode-700 folder such as /root), then grade again. No scores were written.", file=sys.stderr)
        return 2
    results = write_results(args.results, entries, seconds=time.monotonic() - start)
    for entry in results["tests"]:
        print(f"{entry['name']:>14}: {entry['score']:6.2f} / {entry['max_score']}")
    print(f"{'total':>14}: {results['score']:6.2f} / {sum(e['max_score'] for e in entries)}  -> {args.results}")
    return 0


def grading_files() -> dict[str, Path]:
    """The grading package, as the sandbox's folder names its files."""
    return {f"grading/{module.name}": module for module in sorted((SOURCE / "grading").glob("*.py"))}


def check_sandbox() -> int:
    """0 if a sandbox worker starts and imports torch and grading as the user it runs as; else one line, 2."""
    sandbox = Sandbox.prepare(grading_files(), [], CALL_TIME_LIMIT_S)
    try:
        sandbox.start()
    except SandboxBroken as error:
        print(f"grade.py: cannot grade: {error}", file=sys.stderr)
        return 2
    finally:
        sandbox.close()
    print(f"grade.py: the sandbox works (its worker runs as {sandbox.user()})")
    return 0


def _protect(folder: Path) -> None:
    """The hidden references readable by this user only (the sandbox runs as another one when we are root)."""
    if os.geteuid() == 0:
        folder.chmod(0o700)
        for path in folder.iterdir():
            path.chmod(0o600)


if __name__ == "__main__":
    sys.exit(main())
