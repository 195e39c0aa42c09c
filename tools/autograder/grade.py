"""Gradescope autograder: grade a student's diffusion.py with test_diffusion.py on the hidden reference.

On Gradescope, run_autograder runs `python3 grade.py`: it reads /autograder/submission/ and writes
/autograder/results/results.json (one entry per function: name, score, max_score, status, output,
visibility; and the total score). Locally, from the repository or from a built autograder folder:

    python tools/autograder/grade.py --submission path/to/student/ --results /tmp/results.json

Points per function, partial credit and visibility are set just below, in one place.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# ---- grading policy: edit here ---------------------------------------------------------------
POINTS = {"q_sample": 15, "p_losses": 15, "forward": 15, "p_sample": 25, "p_sample_loop": 15, "sample": 15}
PARTIAL_CREDIT = True  # a function earns the share of its checks that pass; False: all or nothing
VISIBILITY = "visible"  # Gradescope: visible, hidden, after_due_date or after_published
TIME_LIMIT_S = 600  # for the whole test run; each test also has its own timeout in test_diffusion.py
# ----------------------------------------------------------------------------------------------

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("AUTOGRADER_ROOT", "/autograder"))
OUTPUT_LIMIT = 8000  # characters of feedback per function


def _first(*paths: Path) -> Path:
    return next((p for p in paths if p.exists()), paths[0])


# In a built autograder the files sit beside this script; in the repository they are where they live.
TESTS = _first(HERE / "test_diffusion.py", HERE.parents[1] / "test_diffusion.py")
REFERENCE = _first(HERE / "reference" / "hidden.pt", HERE.parent / "reference" / "hidden.pt")
PROVIDED = _first(HERE / "provided", HERE.parents[1])  # unet.py etc., in case a submission imports them


def function_of(test_name: str) -> str | None:
    """test_p_sample_loop_steps[...] -> p_sample_loop: the longest function name the test is named after."""
    name = test_name.split("[")[0].removeprefix("test_")
    return next((f for f in sorted(POINTS, key=len, reverse=True) if name == f or name.startswith(f + "_")), None)


def find_submission(path: Path) -> Path | None:
    if path.is_file():
        return path
    direct = path / "diffusion.py"
    if direct.is_file():
        return direct
    found = sorted((p for p in path.rglob("diffusion.py") if "__MACOSX" not in p.parts), key=lambda p: len(p.parts))
    return found[0] if found else None


def run_tests(diffusion_py: Path, reference: Path) -> dict:
    """Run test_diffusion.py on a copy of the submission; the outcomes as pytest_results.py writes them."""
    with tempfile.TemporaryDirectory(prefix="grade-") as work:
        work = Path(work)
        for provided in PROVIDED.glob("*.py"):
            if provided.name not in ("diffusion.py", "test_diffusion.py"):
                shutil.copy(provided, work)
        shutil.copy(TESTS, work / "test_diffusion.py")
        shutil.copy(diffusion_py, work / "diffusion.py")
        (work / "pytest.ini").write_text("[pytest]\n")  # roots pytest here, whatever lies above
        outcomes = work / "outcomes.json"
        env = dict(os.environ, PYTHONPATH=str(HERE), PYTHONDONTWRITEBYTECODE="1",
                   DIFFUSION_REFERENCE=str(reference), DIFFUSION_RESULTS_JSON=str(outcomes))
        command = [sys.executable, "-m", "pytest", "test_diffusion.py", "-q", "--color=no",
                   "-p", "pytest_results", "-p", "no:cacheprovider"]
        try:
            run = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=TIME_LIMIT_S)
        except subprocess.TimeoutExpired:
            return {"error": f"The tests did not finish within {TIME_LIMIT_S} s (an infinite loop?)."}
        if not outcomes.exists():
            return {"error": "The tests stopped before reporting (did diffusion.py exit the process?).\n"
                             + (run.stdout + run.stderr)[-3000:]}
        result = json.loads(outcomes.read_text())
        result["log"] = run.stdout + run.stderr
        return result


def score(outcomes: dict) -> dict:
    """Gradescope's results.json from the outcomes of the tests."""
    tests = outcomes.get("tests", [])
    problem = outcomes.get("error") or "\n".join(outcomes.get("collection_errors", []))
    if not tests and not problem:
        problem = "No test ran.\n" + outcomes.get("log", "")[-3000:]
    failed_functions = {function_of(t["name"]) for t in tests if t["outcome"] != "passed"}
    entries = []
    for function, points in POINTS.items():
        mine = [t for t in tests if function_of(t["name"]) == function]
        # An end-to-end check that fails only because a function it calls is wrong is not charged
        # here: that function loses its own points.
        excused = [t for t in mine if t["outcome"] != "passed" and t["blame"]
                   and all(b in failed_functions for b in t["blame"])]
        counted = [t for t in mine if t not in excused]
        passed = [t for t in counted if t["outcome"] == "passed"]
        share = len(passed) / len(counted) if counted else 0.0
        earned = points * (share if PARTIAL_CREDIT else float(share == 1.0))
        if not mine:
            output = f"{function}: not checked. {problem}".strip()
        else:
            lines = [f"{len(passed)} of {len(counted)} checks passed."]
            messages = [t["message"].strip() for t in counted if t["outcome"] != "passed"]
            lines += [m + (f"  ({messages.count(m)} checks)" if messages.count(m) > 1 else "")
                      for m in dict.fromkeys(messages)]  # each distinct message once, in order
            lines += [f"Not counted here (caused by {', '.join(t['blame'])}): {t['name']}" for t in excused]
            output = "\n\n".join(lines)
        if len(output) > OUTPUT_LIMIT:
            output = output[:OUTPUT_LIMIT] + "\n... (cut; run pytest test_diffusion.py for the rest)"
        entries.append({"name": function, "score": round(earned, 2), "max_score": points,
                        "status": "passed" if earned == points else "failed", "output": output, "visibility": VISIBILITY})
    total = round(sum(e["score"] for e in entries), 2)
    summary = (f"Score {total} of {sum(POINTS.values())}. Your diffusion.py was checked with test_diffusion.py on "
               "hidden inputs (other shapes and values than data/reference/public.pt). "
               "Run `pytest test_diffusion.py` for the same checks on the public set.")
    return {"score": total, "output": summary, "stdout_visibility": "hidden", "tests": entries}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Grade a diffusion.py; write Gradescope's results.json.")
    parser.add_argument("--submission", type=Path, default=ROOT / "submission",
                        help="the submission folder or diffusion.py itself (default: $AUTOGRADER_ROOT/submission)")
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "results.json",
                        help="where to write results.json (default: $AUTOGRADER_ROOT/results/results.json)")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="the reference file (default: the hidden set)")
    args = parser.parse_args(argv)
    for needed in (TESTS, args.reference):
        if not needed.is_file():
            print(f"grade.py: {needed} is missing; rebuild the autograder with tools/make_handout.py", file=sys.stderr)
            return 2
    start = time.time()
    diffusion_py = find_submission(args.submission)
    if diffusion_py is None:
        outcomes = {"error": f"No diffusion.py in your submission ({args.submission}): upload diffusion.py itself."}
    else:
        outcomes = run_tests(diffusion_py, args.reference)
    results = score(outcomes)
    results["execution_time"] = round(time.time() - start, 1)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1))
    for entry in results["tests"]:
        print(f"{entry['name']:>14}: {entry['score']:6.2f} / {entry['max_score']}")
    print(f"{'total':>14}: {results['score']:6.2f} / {sum(POINTS.values())}  -> {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
