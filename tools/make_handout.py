"""Build the student handout and the Gradescope autograder from the solution (instructors only).

    python tools/make_handout.py OUT_DIR [--parts 1 2] [--force] [--no-check]

Parts (tools/autograder/parts.py, one row each). diffusion.py holds Parts 1 and 2, one class each: Part 1 is
GaussianDiffusion from the top of the file; Part N > 1 is the section that starts at its banner
line `# Part N: ...` (with the `# ====` rule above it). --parts says which parts students write:
- a part handed out: its solution blocks become TODOs, its test file and public reference ship;
- an earlier part not handed out (Part 1 with `--parts 2`): its solution is PROVIDED, i.e. its code
  stays in diffusion.py with only the BEGIN/END SOLUTION marker lines dropped, since a later part
  builds on it (ConditionalGaussianDiffusion inherits q_sample from Part 1);
- a later part not handed out (Part 2 with `--parts 1`): its section, test file and references are
  left out entirely, so that it can be handed out later without its solution having leaked.

Writes
    OUT_DIR/handout/         the students' tree: diffusion.py with every BEGIN/END SOLUTION block
                             replaced by a TODO and `raise NotImplementedError`, and every other file
                             a student needs (see HANDOUT below). No solution, no hidden reference,
                             no tools/, tests/, bench/ or .ci/. README.md loses its instructor-only
                             blocks; pytest.ini names only the handout's own test files.
    OUT_DIR/autograder/      Gradescope's layout: setup.sh and run_autograder at the top, grade.py and
                             sandbox.py, grading/ and each handed-out part's test file with its
                             public reference (data/reference/), reference/ (the hidden sets),
                             provided/ (the other .py files) and student_requirements.txt.
    OUT_DIR/autograder.zip   the same folder zipped with its files at the root: upload this one.

It refuses to finish (exit 1, nothing written) if a solution line would reach the handout, or if a
self-check fails: the handout's test_diffusion.py must fail every test on the stub with
"<name>: not implemented yet" and pass them all with the solution copied back in; the autograder
must give the solution full marks and the stub zero for each function. --no-check skips those.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AUTOGRADER_SOURCE = ROOT / "tools" / "autograder"
sys.path.insert(0, str(AUTOGRADER_SOURCE))

import grade  # noqa: E402  (how a test maps to its function)
from parts import Part  # noqa: E402  (tools/autograder/parts.py: the table of parts)

# ---- the parts of the homework: one row each in tools/autograder/parts.py, here by number ---------
PARTS: dict[int, Part] = {part.number: part for part in grade.PARTS.values()}
DEFAULT_PARTS = (1,)
PART_BANNER = re.compile(r"^# Part (\d+):")

# ---- what a student gets, in one place --------------------------------------------------------
# Files git tracks (or new files it does not ignore): top-level files matching HANDOUT_TOP_LEVEL,
# everything under HANDOUT_DIRS, never anything under NEVER_DIRS or named like NEVER_NAMES.
HANDOUT_TOP_LEVEL = ("*.py", "*.ipynb", "README.md", "LICENSE*", "requirements.txt", "pytest.ini", ".gitignore")
HANDOUT_DIRS = ("data", "web", "grading")  # web/: the page serve.py shows; grading/: the tests' machinery
NEVER_DIRS = ("tools", "tests", "bench", ".ci", ".git")
NEVER_NAMES = ("*hidden*", "*.pyc", ".diffusion_cache*")
REQUIRED = ("diffusion.py", "grading/__init__.py", "unet.py", "requirements.txt")  # and each handed-out part's tests and public reference
# The training loop and the modules it imports (a handout without one cannot train), main.py, the notebooks.
EXPECTED = ("trainer.py", "config.py", "training_data.py", "checkpoints.py", "evaluation.py", "fid.py", "grids.py",
            "preflight.py", "devices.py", "run_log.py", "utils.py", "main.py", "run_in_colab.ipynb", "run_in_kaggle.ipynb",
            "README.md")
HIDDEN_REFERENCE = ROOT / "tools" / "reference" / "hidden.pt"
AUTOGRADER_FILES = ("setup.sh", "run_autograder", "grade.py", "parts.py", "sandbox.py", "requirements.txt",
                    "THREAT_MODEL.md")
# Solution lines this long must not appear in any handout file (shorter ones, like `return img`,
# only in diffusion.py: they are too common elsewhere to mean a leak).
MIN_LEAK_CHARS = 30
# Markdown between these marker lines (instructor workflow, benchmarks) is left out of the handout.
INSTRUCTOR_ONLY = re.compile(r"^<!-- instructor-only -->$.*?^<!-- /instructor-only -->\n?", re.S | re.M)
# Markdown between `<!-- part N -->` and `<!-- /part N -->` is about Part N: kept (without the marker lines)
# only when Part N is handed out.
PART_ONLY = re.compile(r"^<!-- part (\d+) -->\n(.*?)^<!-- /part \1 -->\n?", re.S | re.M)
# ----------------------------------------------------------------------------------------------

TODO = {  # per part, per function
  1: {
    "q_sample": "Algorithm 1's jump to step t: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise, with `extract`.",
    "p_losses": "make x_t with q_sample, predict its noise with self.model(x_t, t), return the mean L1 error.",
    "forward": "draw t ~ Uniform{0..T-1} per example on x_0's device, noise with self.noise_like if None, "
               "return p_losses.",
    "p_sample": "Algorithm 2's step: predict the noise, clamp x0-hat to [-1, 1], posterior mean; "
                "add sqrt(variance) * self.noise_like(...) unless t_index == 0.",
    "p_sample_loop": "Algorithm 2: for t_index = T-1 down to 0, x = self.p_sample(x, t, t_index), t a [B] long tensor.",
    "sample": "x_T = self.noise_like((B, C, H, W), self.device), run p_sample_loop, map [-1, 1] to [0, 1].",
  },
  2: {
    "drop_labels": "u = self.uniform_like(y.shape, y.device); the null label self.null_label where u < p_uncond.",
    "p_losses": "as in Part 1, but the network is self.model(x_t, t, y).",
    "forward": "as in Part 1 (t, noise), then p_losses with the labels from self.drop_labels(y).",
    "guided_noise": "one network call on the batch of 2B (x and t twice; y, then null labels); "
                    "eps_bar = (1 + w) eps_cond - w eps_uncond.",
    "threshold": "none: unchanged; static: clamp to [-1, 1]; dynamic: per example s = max(1, quantile of |x0_hat|), "
                 "clamp to [-s, s], divide by s.",
    "p_sample": "Part 1's step with eps from self.guided_noise and x0-hat through self.threshold instead of the clamp.",
    "p_sample_loop": "Part 1's loop, passing y, w and threshold to every p_sample.",
    "sample": "x_T = self.noise_like((len(y), C, H, W), self.device), run p_sample_loop, map to [0, 1].",
  },
  3: {
    "langevin_step": "x = x.detach().requires_grad_(); under torch.enable_grad(), grad = torch.autograd.grad("
                     "self.energy(x).sum(), x); return clamp(x - step_size grad + noise_scale noise_like(...), -1, 1), "
                     "detached.",
    "langevin_sample": "x = self.langevin_step(x), `steps` times; return x.",
    "loss": "E(x_real) and E(x_fake.detach()); mean(E_real) - mean(E_fake) + alpha (mean(E_real^2) + mean(E_fake^2)).",
    "sample_buffer": "idx, fresh = self.draw_replay(B); noise = self.uniform_like((B, C, H, W), self.device); "
                     "noise where fresh, self.replay[idx] elsewhere; return (x, idx).",
    "update_buffer": "self.replay[idx] = x.detach().",
    "forward": "sample_buffer(B), langevin_sample(x, self.langevin_steps), update_buffer(x_fake, idx), return the loss.",
    "sample": "x = self.uniform_like((B, C, H, W), self.device); return (langevin_sample(x, sample_steps) + 1) / 2.",
  },
}
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
TEXT_SUFFIXES = {".py", ".ipynb", ".md", ".txt", ".ini", ".cfg", ".toml", ".json", ".yaml", ".yml", ".sh", ""}


class HandoutError(Exception):
    """Why the handout cannot be built; printed as one message."""


def repo_files(root: Path) -> list[str]:
    """Files of the repository: what git tracks plus new files it does not ignore (or a walk, outside git)."""
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
        in_git = top.returncode == 0 and Path(top.stdout.strip()).resolve() == root.resolve()
    except FileNotFoundError:
        in_git = False
    if in_git:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                capture_output=True, text=True, check=True).stdout.split("\0")
        return sorted({f for f in listed if f and (root / f).is_file()})
    skip = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache", "train", "raw", "results", "wandb", ".venv"}
    return sorted(str(p.relative_to(root)).replace(os.sep, "/") for p in root.rglob("*")
                  if p.is_file() and not skip & set(p.relative_to(root).parts))


def handout_files(root: Path, parts: tuple[int, ...] = DEFAULT_PARTS) -> list[str]:
    """The files of the handout of `parts`: a part's test file and references ship only with it."""
    chosen = []
    other_parts = {f for n, p in PARTS.items() if n not in parts for f in (p.test_file, p.public, f"tools/reference/{p.hidden}")}
    # a later part's own files are left out (an earlier part's are provided), its source too unless diffusion.py
    other_parts |= {f for n, p in PARTS.items() if n > max(parts)
                    for f in ((p.source,) if p.source != "diffusion.py" else ()) + p.extra}
    for path in repo_files(root):
        pieces = path.split("/")
        if pieces[0] in NEVER_DIRS or any(fnmatch.fnmatch(pieces[-1], n) for n in NEVER_NAMES) or path in other_parts:
            continue
        if (len(pieces) == 1 and any(fnmatch.fnmatch(path, g) for g in HANDOUT_TOP_LEVEL)) or pieces[0] in HANDOUT_DIRS:
            chosen.append(path)
    required = REQUIRED + tuple(f for n in parts for f in (PARTS[n].test_file, PARTS[n].public))
    missing = [f for f in dict.fromkeys(required) if f not in chosen]
    if missing:
        hint = " (run python tools/make_reference.py)" if any(f.startswith("data/reference/") for f in missing) else ""
        raise HandoutError(f"missing from the repository: {', '.join(missing)}{hint}")
    for name in EXPECTED:
        if name not in chosen:
            print(f"make_handout: note: {name} is not in the repository yet, so not in the handout")
    return chosen


def part_functions(root: Path, part: Part) -> tuple[str, ...]:
    """The functions a part's test file checks (its FUNCTIONS tuple), read without importing it."""
    path = root / part.test_file
    if not path.is_file():
        raise HandoutError(f"Part {part.number}'s test file {part.test_file} is not in the repository: "
                           f"hand out other parts (--parts), or add it")
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FUNCTIONS" for t in node.targets):
            functions = tuple(ast.literal_eval(node.value))
            if set(functions) != set(part.points):
                raise HandoutError(f"{part.test_file} checks {', '.join(functions)}; Part {part.number}'s points in "
                                   f"tools/autograder/parts.py are for {', '.join(part.points)}: give each its points")
            return functions
    raise HandoutError(f"{part.test_file} has no FUNCTIONS tuple naming the functions it checks")


def stub_solution(source: str, parts: tuple[int, ...] = DEFAULT_PARTS,
                  functions: dict[int, tuple[str, ...]] | None = None, file: str = "diffusion.py") -> tuple[str, dict, dict]:
    """`file` (diffusion.py, or a part's own file such as energy.py) as the handout of `parts` has it
    (see the module docstring).

    Returns the stub, the removed solution lines {(part, function): lines} and the solution lines
    kept as provided code {(part, function): lines}. `functions` ({part: names}) are the functions
    each handed-out part must have a solution block for (default: whatever the blocks are in).
    """
    part_of_class = {p.cls: p.number for p in PARTS.values()}
    out, removed, provided = [], {}, {}
    part, function, block, cut = 1, None, None, False
    lines = source.splitlines(keepends=True)
    for number, line in enumerate(lines, 1):
        banner = PART_BANNER.match(line)
        if banner and block is None:
            part = int(banner.group(1))
            cut = part > max(parts)
            if cut and out and out[-1].startswith("# ===="):  # the rule above the banner goes too
                out.pop()
                while out and not out[-1].strip():
                    out.pop()
        if cut:
            continue
        match = re.match(r"\s*def (\w+)\(", line)
        if match and block is None:
            function = match.group(1)
        match = re.match(r"class (\w+)\b", line)
        if match and block is None:
            part = part_of_class.get(match.group(1), part)
            function = None
        if line.strip() == BEGIN:
            if block is not None:
                raise HandoutError(f"{file} line {number}: {BEGIN} inside another solution block")
            if function is None or (part, function) in removed or (part, function) in provided:
                raise HandoutError(f"{file} line {number}: {BEGIN} outside a function, or twice in {function}")
            block, indent = [], line[: len(line) - len(line.lstrip())]
        elif line.strip() == END:
            if block is None:
                raise HandoutError(f"{file} line {number}: {END} without {BEGIN}")
            if part in parts:
                removed[(part, function)] = block
                hint = f"TODO ({function}): " + TODO.get(part, {}).get(function, "see the docstring above.")
                out += [f"{indent}# {piece}\n" for piece in textwrap.wrap(hint, 96 - len(indent), subsequent_indent="  ")]
                out.append(f'{indent}raise NotImplementedError("{function}: not implemented yet")\n')
            else:  # an earlier part's solution, provided
                provided[(part, function)] = block
                out += block
            block = None
        elif block is not None:
            block.append(line)
        else:
            out.append(line)
    if block is not None:
        raise HandoutError(f"{file}: {BEGIN} in {function} has no {END}")
    while out and not out[-1].strip():
        out.pop()
    for number in (n for n in parts if PARTS[n].source == file):
        found = sorted(f for p, f in removed if p == number)
        if not found:
            raise HandoutError(f"{file} has no solution blocks for Part {number} (class {PARTS[number].cls})")
        if functions and number in functions and set(found) != set(functions[number]):
            raise HandoutError(f"{file} has Part {number} solution blocks in {found}; its tests "
                               f"({PARTS[number].test_file}) check {sorted(functions[number])}")
    stub = "".join(out)
    compile(stub, file, "exec")
    return stub, removed, provided


def check_no_leak(handout: Path, secret: dict[tuple[int, str], list[str]], provided: set[str] = frozenset(),
                  file: str = "diffusion.py") -> None:
    """Refuse if a solution line of `file` is in the handout: any of them in that file, long ones anywhere.

    `secret` holds the solution blocks of every part that is handed out or left out; lines also in
    `provided` (an earlier part's solution, shipped on purpose) are not secrets.
    """
    solution = {line.strip(): function for (_, function), lines in secret.items() for line in lines
                if re.search(r"\w", line) and not line.strip().startswith("#")  # not comments, not a lone `)`
                and line.strip() not in provided}
    stub = handout / file  # absent when its part is left out
    stub_lines = {line.strip() for line in stub.read_text().splitlines()} if stub.is_file() else set()
    leaks = [(line, function, file) for line, function in solution.items() if line in stub_lines]
    long_lines = {line: f for line, f in solution.items() if len(line) >= MIN_LEAK_CHARS}
    for path in sorted(handout.rglob("*")):
        if path.is_file() and path.name != file and path.suffix in TEXT_SUFFIXES:
            text = path.read_text(errors="replace")
            leaks += [(line, f, str(path.relative_to(handout))) for line, f in long_lines.items() if line in text]
    if leaks:
        raise HandoutError("refusing to finish: solution lines would reach the students:\n" + "\n".join(
            f"  {where}: `{line}` (from {function}'s solution)" for line, function, where in leaks))


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def handout_pytest_ini(source: str, test_files: list[str]) -> str:
    """The repository's pytest.ini with `testpaths` naming only the handout's own test files (it has no tests/)."""
    line = "testpaths = " + " ".join(test_files) + "\n"
    ini, count = re.subn(r"^testpaths\s*=.*\n(?:[ \t]+\S.*\n)*", line, source, flags=re.M)
    return ini if count else ini.replace("[pytest]\n", "[pytest]\n" + line, 1)


def student_markdown(text: str, parts: tuple[int, ...] = DEFAULT_PARTS) -> str:
    """Markdown as the handout of `parts` has it: no instructor-only blocks, only the handed-out parts' blocks."""
    text = INSTRUCTOR_ONLY.sub("", text)
    text = PART_ONLY.sub(lambda m: m.group(2) if int(m.group(1)) in parts else "", text)
    return re.sub(r"\n{3,}", "\n\n", text)  # without a block, the blank lines around it would stack up: keep one


def build_handout(root: Path, out: Path, parts: tuple[int, ...] = DEFAULT_PARTS) -> dict:
    functions = {n: part_functions(root, PARTS[n]) for n in parts}
    files = handout_files(root, parts)
    for name in files:
        _copy(root / name, out / name)
        if name.endswith(".md"):
            (out / name).write_text(student_markdown((root / name).read_text(), parts))
    if "pytest.ini" in files:
        tests = sorted(f for f in files if "/" not in f and fnmatch.fnmatch(f, "test_*.py"))
        (out / "pytest.ini").write_text(handout_pytest_ini((root / "pytest.ini").read_text(), tests))
    source = (root / "diffusion.py").read_text()
    stub, removed, provided = stub_solution(source, parts, functions)
    (out / "diffusion.py").write_text(stub)
    provided_lines = {line.strip() for lines in provided.values() for line in lines}
    secrets = []  # (file, its solution blocks that must not reach the students, lines shipped on purpose)
    for file in sorted({p.source for p in PARTS.values()} - {"diffusion.py"}):  # parts in files of their own
        if not (root / file).is_file():
            continue
        own = (root / file).read_text()
        own_provided = {}
        if (out / file).is_file():  # stubbed before any leak check reads the handout
            own_stub, own_removed, own_provided = stub_solution(own, parts, functions, file)
            (out / file).write_text(own_stub)
            removed.update(own_removed)
        _, own_blocks, _ = stub_solution(own, tuple(n for n, p in PARTS.items() if p.source == file), file=file)
        own_lines = {line.strip() for lines in own_provided.values() for line in lines}
        secrets.append((file, {k: v for k, v in own_blocks.items() if k not in own_provided}, own_lines))
    present = tuple(n for n, p in PARTS.items() if re.search(rf"^class {p.cls}\b", source, re.M))
    _, every_block, _ = stub_solution(source, present)
    check_no_leak(out, {k: v for k, v in every_block.items() if k not in provided}, provided_lines)
    for file, blocks, own_lines in secrets:
        check_no_leak(out, blocks, provided_lines | own_lines, file)
    return removed


def build_autograder(root: Path, handout: Path, out: Path, hidden: Path) -> None:
    """Gradescope's folder: the grader, each handed-out part's tests and hidden reference, the provided files."""
    if not hidden.is_file():
        raise HandoutError(f"{hidden} is missing: run python tools/make_reference.py --hidden")
    for name in AUTOGRADER_FILES:
        _copy(AUTOGRADER_SOURCE / name, out / name)
    _copy(handout / "requirements.txt", out / "student_requirements.txt")  # setup.sh installs what students may import
    for module in sorted((handout / "grading").glob("*.py")):
        _copy(module, out / "grading" / module.name)
    student_files = set()
    for part in PARTS.values():
        if not (handout / part.test_file).is_file():
            continue  # a part not handed out (or not in this repository yet)
        _copy(handout / part.test_file, out / part.test_file)
        _copy(hidden.parent / part.hidden, out / "reference" / part.hidden)
        _copy(handout / part.public, out / part.public)
        student_files |= set(part.student_files)
    for provided in sorted(handout.glob("*.py")):
        if provided.name not in student_files and not provided.name.startswith("test_"):
            _copy(provided, out / "provided" / provided.name)
    for script in ("setup.sh", "run_autograder"):
        (out / script).chmod(0o755)


def write_zip(folder: Path, zip_path: Path) -> None:
    """Files at the zip's root (Gradescope's requirement), fixed dates, executable bits kept."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(path.relative_to(folder)).replace(os.sep, "/"), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (path.stat().st_mode & 0xFFFF) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())


# ---- self-checks ------------------------------------------------------------------------------

def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DIFFUSION_REFERENCE", "DIFFUSION_TEST_DEVICE")}
    return dict(env, PYTHONDONTWRITEBYTECODE="1", **extra)


def run_handout_tests(tree: Path, autograder: Path, test_file: str = "test_diffusion.py") -> list[dict]:
    """`pytest <test_file>` in a handout tree, as a student runs it; each test's outcome."""
    with tempfile.TemporaryDirectory() as scratch:
        outcomes = Path(scratch) / "outcomes.json"
        env = _clean_env(PYTHONPATH=str(AUTOGRADER_SOURCE), DIFFUSION_RESULTS_JSON=str(outcomes))
        subprocess.run([sys.executable, "-m", "pytest", test_file, "-q", "-p", "pytest_results",
                        "-p", "no:cacheprovider"], cwd=tree, env=env, capture_output=True, text=True, timeout=600)
        if not outcomes.exists():
            raise HandoutError(f"pytest did not run in {tree}")
        result = json.loads(outcomes.read_text())
    if result["collection_errors"] or not result["tests"]:
        raise HandoutError(f"{test_file} does not collect in {tree}:\n" + "\n".join(result["collection_errors"]))
    return result["tests"]


def run_autograder(autograder: Path, *submitted: Path) -> dict:
    """The autograder's run_autograder on the submitted files, in a local stand-in for /autograder."""
    with tempfile.TemporaryDirectory() as fake_root:
        for path in submitted:
            _copy(path, Path(fake_root) / "submission" / path.name)
        env = _clean_env(AUTOGRADER_ROOT=fake_root, AUTOGRADER_PYTHON=sys.executable)
        run = subprocess.run(["bash", str(autograder / "run_autograder")], env=env, capture_output=True, text=True,
                             timeout=900)
        results = Path(fake_root) / "results" / "results.json"
        if run.returncode != 0 or not results.exists():
            raise HandoutError(f"run_autograder failed:\n{run.stdout}{run.stderr}")
        return json.loads(results.read_text())


REGENERATE = ("if you changed the solution, regenerate the references: python tools/make_reference.py && "
              "python tools/make_reference.py --hidden (Part 3: tools/make_energy_reference.py)")


def self_check(root: Path, handout: Path, autograder: Path, parts: tuple[int, ...] = DEFAULT_PARTS) -> dict:
    """Per handed-out part: the stub fails each test with "<name>: not implemented yet", the solution passes
    them all; the autograder gives the solution full marks and the stub zero for each function."""
    report = {}
    sources = sorted({PARTS[n].source for n in parts})
    stub_counts, solved_counts = [], []
    for n in parts:
        part, points = PARTS[n], PARTS[n].points
        stub_tests = run_handout_tests(handout, autograder, part.test_file)
        for function in points:
            mine = [t for t in stub_tests if grade.function_of(t["name"], points) == function]
            wrong = [t for t in mine if t["outcome"] != "failed" or t["message"].strip() != f"{function}: not implemented yet"]
            if not mine or wrong:
                raise HandoutError(f"the stub's {function} tests do not all fail with '{function}: not implemented yet': "
                                   + (wrong[0]["name"] + ": " + wrong[0]["message"][:500] if wrong else "no test"))
        stub_counts.append(f"{part.test_file}: {len(stub_tests)}")
        with tempfile.TemporaryDirectory() as scratch:
            solved = Path(scratch) / "handout"
            shutil.copytree(handout, solved)
            for source in sources:
                shutil.copy(root / source, solved / source)
            solved_tests = run_handout_tests(solved, autograder, part.test_file)
        failing = [t for t in solved_tests if t["outcome"] != "passed"]
        if failing or len(solved_tests) != len(stub_tests):
            raise HandoutError(f"with the solution copied back, {len(failing)} tests of {part.test_file} fail "
                               f"({REGENERATE}):\n" + "\n".join(f"{t['name']}: {t['message'][:300]}" for t in failing))
        solved_counts.append(f"{part.test_file}: {len(solved_tests)}")
    report["stub"] = f"{', '.join(stub_counts)} tests, all fail with '<name>: not implemented yet'"
    report["solution"] = f"{', '.join(solved_counts)} tests pass"

    possible = sum(sum(PARTS[n].points.values()) for n in parts)
    full = run_autograder(autograder, *(root / source for source in sources))
    if full["score"] != possible:
        raise HandoutError(f"the autograder gives the solution {full['score']} of {possible} "
                           f"({REGENERATE}):\n" + json.dumps(full, indent=1)[:3000])
    functions = sum(len(PARTS[n].points) for n in parts)
    empty = run_autograder(autograder, *(handout / source for source in sources))
    if any(t["score"] != 0 for t in empty["tests"]) or len(empty["tests"]) != functions:
        raise HandoutError("the autograder gives the stub points:\n" + json.dumps(empty, indent=1)[:3000])
    report["autograder"] = f"solution {full['score']} / {possible}, stub 0 for each function"
    report["results"] = {"solution": full, "stub": empty}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the student handout and the Gradescope autograder.")
    parser.add_argument("out_dir", type=Path, help="where to write handout/, autograder/ and autograder.zip")
    parser.add_argument("--force", action="store_true", help="replace handout/ and autograder/ if OUT_DIR has them")
    parser.add_argument("--parts", type=int, nargs="+", default=list(DEFAULT_PARTS), metavar="N",
                        help=f"the parts students write, of {sorted(PARTS)} (default: {' '.join(map(str, DEFAULT_PARTS))}); "
                             "earlier parts not listed ship with their solution, later ones are left out")
    parser.add_argument("--no-check", action="store_true", help="skip the self-checks (the leak check always runs)")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)  # another repository (tests)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: there is no part {unknown[0]}; the parts are {' '.join(map(str, sorted(PARTS)))}")
    try:
        build(args.root.resolve(), args.out_dir, args.force, check=not args.no_check, parts=tuple(sorted(set(args.parts))))
    except HandoutError as error:
        print(f"make_handout: {error}", file=sys.stderr)
        return 1
    return 0


def build(root: Path, out_dir: Path, force: bool = False, check: bool = True,
          parts: tuple[int, ...] = DEFAULT_PARTS) -> dict:
    """Build into a staging folder inside out_dir, check, then move into place; the self-check report."""
    targets = [out_dir / "handout", out_dir / "autograder", out_dir / "autograder.zip"]
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        raise HandoutError(f"{existing[0]} exists: pass --force to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".make_handout-", dir=out_dir))
    try:
        handout, autograder = staging / "handout", staging / "autograder"
        build_handout(root, handout, parts)
        build_autograder(root, handout, autograder, root / HIDDEN_REFERENCE.relative_to(ROOT))
        report = self_check(root, handout, autograder, parts) if check else {}
        write_zip(autograder, staging / "autograder.zip")
        for target in targets:
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            (staging / target.name).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for key in ("stub", "solution", "autograder"):
        if key in report:
            print(f"make_handout: self-check {key}: {report[key]}")
    print(f"make_handout: wrote {targets[0]}, {targets[1]} and {targets[2]}")
    return report


if __name__ == "__main__":
    sys.exit(main())
