"""A part is a declaration: a toy Part 4 of two functions, added to a copy of the repository the way README's
"Adding a part" says (its solution file, its test file with its `Part` declaration, its mistakes catalogue,
its references, one row in tools/autograder/parts.py), is handed out and graded by the unchanged
tools/make_handout.py and grade.py, and checked by the unchanged tests/test_fairness.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

SOLUTION = '''\
"""Part 4 (a toy): two functions of a tensor."""

import torch


class Toy:
    def double(self, x: torch.Tensor) -> torch.Tensor:
        """2 x, for x of any shape."""
        # BEGIN SOLUTION
        return x * 2
        # END SOLUTION

    def shift(self, x: torch.Tensor, by: float) -> torch.Tensor:
        """x + by, for x of any shape."""
        # BEGIN SOLUTION
        return x + by
        # END SOLUTION
'''

TESTS = '''\
"""Checks for the two Toy functions you write in toy.py (Part 4)."""

import grading
from grading.cases import Part, run_twice

FUNCTIONS = ("double", "shift")


@grading.observation
def observe_case(toy_class, function, case):
    return run_twice(function, toy_class(), case, PART.device, dict)


PART = Part(__file__, FUNCTIONS, student=("toy", "Toy"), reference_file=("TOY_REFERENCE", "public_toy.pt"),
            what={"double": "2 x", "shift": "x + by"}, inputs=("args",), observe_case=observe_case, seams=(),
            fixture_name="toy_class")
toy_class = PART.fixture()
globals().update(PART.tests_of("double", "2 x on stored inputs"))
globals().update(PART.tests_of("shift", "x + by on stored inputs"))
'''

MISTAKES = '''\
"""Part 4's (the toy's) common mistakes and other correct implementations."""

import torch

from tools.mistakes_format import Catalogue
from toy import Toy

BOOK = Catalogue(Toy)


@BOOK.mistake("double.squares", "double", "x squared instead of doubled", "double is 2 x, not x * x.")
def _(self, x):
    return x * x


@BOOK.mistake("shift.subtracts", "shift", "by subtracted instead of added", "shift is x + by, not x - by.")
def _(self, x, by):
    return x - by


@BOOK.alternative("added_to_itself", "double")
def _(self, x):
    return x + x


@BOOK.alternative("times_two_on_the_left", "double")
def _(self, x):
    return 2 * x


@BOOK.alternative("torch_mul", "double")
def _(self, x):
    return torch.mul(x, 2)


@BOOK.alternative("in_place_on_a_copy", "double")
def _(self, x):
    return x.clone().mul_(2)


@BOOK.alternative("float64", "double")
def _(self, x):
    return (x.double() * 2).to(x.dtype)


@BOOK.alternative("torch_add", "shift")
def _(self, x, by):
    return torch.add(x, by)


@BOOK.alternative("full_like", "shift")
def _(self, x, by):
    return x + torch.full_like(x, by)


@BOOK.alternative("in_place_shift", "shift")
def _(self, x, by):
    out = x.clone()
    out += by
    return out


@BOOK.alternative("minus_minus", "shift")
def _(self, x, by):
    return x - (-by)


@BOOK.alternative_class
class ThroughEachOther(Toy):
    def double(self, x):
        return self.shift(x, 0.0) * 2

    def shift(self, x, by):
        return x.add(by)
'''
ALTERNATIVES = ("ThroughEachOther", "added_to_itself", "float64", "full_like", "in_place_on_a_copy", "in_place_shift",
                "minus_minus", "times_two_on_the_left", "torch_add", "torch_mul")

ROW = '''
PARTS["toy"] = Part(4, "Toy", "test_toy", points={"double": 4, "shift": 6}, public="data/reference/public_toy.pt",
                    hidden="hidden_toy.pt", source="toy.py", fixture="toy_class", mistakes="tools.toy_mistakes")
'''


def reference(seed: int) -> dict:
    """A couple of cases per function, each with its mistake's output; the values written out here, not
    computed by toy.py or its catalogue."""
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(2, 3, generator=g), torch.randn(4, generator=g)]
    cases = {"double": [dict(id=f"x{i}", label=f"x of shape {list(x.shape)}", args=[x], expected=x + x,
                             mistakes={"double.squares": x * x}) for i, x in enumerate(xs)],
             "shift": [dict(id=f"x{i}-by{by}", label=f"by={by}", args=[x, by], expected=x + by,
                            mistakes={"shift.subtracts": x - by}) for i, (x, by) in enumerate(zip(xs, (0.5, -2.0)))]}
    mistakes = {"double.squares": dict(function="double", title="x squared instead of doubled",
                                       why="double is 2 x, not x * x.", detect="output"),
                "shift.subtracts": dict(function="shift", title="by subtracted instead of added",
                                        why="shift is x + by, not x - by.", detect="output")}
    return {"format": 1, "name": "toy", "seed": seed, "mistakes": mistakes, "cases": cases}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A copy of the repository with the toy part added, and what make_handout.py --parts 4 built from it."""
    repo = tmp_path_factory.mktemp("repo")
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in (f for f in listed if f and (ROOT / f).is_file()):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    (repo / "toy.py").write_text(SOLUTION)
    (repo / "test_toy.py").write_text(TESTS)
    (repo / "tools" / "toy_mistakes.py").write_text(MISTAKES)
    torch.save(reference(1), repo / "data" / "reference" / "public_toy.pt")
    torch.save(reference(2), repo / "tools" / "reference" / "hidden_toy.pt")
    with open(repo / "tools" / "autograder" / "parts.py", "a") as table:
        table.write(ROW)
    out = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, str(repo / "tools" / "make_handout.py"), str(out), "--parts", "4"],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return repo, out, run.stdout, env


def test_the_handout_stubs_the_toy_part(built):
    _, out, report, env = built
    handout = out / "handout"
    stub = (handout / "toy.py").read_text()
    assert "return x * 2" not in stub and "return x + by" not in stub
    for function in ("double", "shift"):
        assert f'raise NotImplementedError("{function}: not implemented yet")' in stub
    assert (handout / "test_toy.py").is_file() and (handout / "data" / "reference" / "public_toy.pt").is_file()
    assert not (handout / "tools").exists()
    run = subprocess.run([sys.executable, "-m", "pytest", "test_toy.py", "-q", "-p", "no:cacheprovider"],
                         cwd=handout, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "4 failed" in run.stdout, run.stdout
    assert "double: not implemented yet" in run.stdout and "shift: not implemented yet" in run.stdout
    assert "self-check autograder: solution 10" in report, report  # make_handout's own check of its build


def test_the_built_autograder_gives_the_solution_full_marks(built, tmp_path):
    repo, out, _, env = built
    autograder = out / "autograder"
    assert (autograder / "reference" / "hidden_toy.pt").is_file() and (autograder / "test_toy.py").is_file()
    (tmp_path / "submission").mkdir()
    shutil.copy(repo / "toy.py", tmp_path / "submission" / "toy.py")
    run = subprocess.run(["bash", str(autograder / "run_autograder")], capture_output=True, text=True, timeout=600,
                         env=dict(env, AUTOGRADER_ROOT=str(tmp_path), AUTOGRADER_PYTHON=sys.executable))
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert [(t["name"], t["score"], t["max_score"]) for t in results["tests"]] == [
        ("Part 4: double", 4, 4), ("Part 4: shift", 6, 6)]
    assert results["score"] == 10
    assert "2 of 2 checks passed" in results["tests"][0]["output"]


def test_the_toy_part_needs_its_points_for_every_function(built, tmp_path):
    """A declaration whose FUNCTIONS and points disagree is refused, with one line naming both."""
    repo, _, _, env = built
    table = repo / "tools" / "autograder" / "parts.py"
    original = table.read_text()
    try:
        table.write_text(original.replace('points={"double": 4, "shift": 6}', 'points={"double": 4}'))
        run = subprocess.run([sys.executable, str(repo / "tools" / "make_handout.py"), str(tmp_path), "--parts", "4",
                              "--no-check"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    finally:
        table.write_text(original)
    assert run.returncode == 1
    assert run.stderr.strip() == ("make_handout: test_toy.py checks double, shift; Part 4's points in "
                                                    "tools/autograder/parts.py are for double: give each its points")


def test_the_fairness_tests_pick_the_toy_part_up(built):
    """tests/test_fairness.py, unchanged, runs the toy's catalogue from its row: its solution and every
    alternative pass, each mistake fails its own function with its name, on both sets."""
    repo, _, _, env = built
    run = subprocess.run([sys.executable, "-m", "pytest", "tests/test_fairness.py", "-m", "", "-k", "toy", "-v",
                          "-p", "no:cacheprovider"], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    expected = ["test_the_catalogue_covers_every_function[toy]", "test_there_are_ten_other_correct_implementations[toy]"]
    for set_name in ("public", "hidden"):
        expected += [f"test_correct_implementations_pass[toy-{set_name}-{name}]" for name in ("Toy", *ALTERNATIVES)]
        expected += [f"test_each_mistake_fails_and_is_named[toy-{set_name}-{key}]"
                     for key in ("double.squares", "shift.subtracts")]
    assert set(re.findall(r"::(\S+) PASSED", run.stdout)) == set(expected), run.stdout
    assert f"{len(expected)} passed" in run.stdout, run.stdout
