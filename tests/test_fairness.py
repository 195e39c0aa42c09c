"""Every part's grading is fair and strict: other correct implementations pass, every catalogued mistake fails.

The parts are the rows of tools/autograder/parts.py; a row names its student test module, its fixture, its
references and its mistakes catalogue (tools/mistakes_format.py), so a new part is checked here with no
test file of its own. The checks run in-process through `grading.run_checks`, which calls the very test
functions that pytest runs on students, with the class under test swapped. The public set runs in the fast
tier; the hidden set (the same checks again) and the whole test file once per mistake in the slow one.
Each part's own checks (blame, messages, stubs) stay in its file: tests/test_grading_fairness.py,
test_conditional_fairness.py, test_energy_grading.py.
"""

from __future__ import annotations

import functools
import importlib
import re
from pathlib import Path
from types import ModuleType

import pytest

import grading
from tools.autograder.parts import PARTS
from tools.mistakes_format import Catalogue, Mistake, load

ROOT = Path(__file__).resolve().parent.parent
SETS = ("public", "hidden")


def _marks(set_name: str) -> list:
    return [pytest.mark.slow] if set_name == "hidden" else []


@functools.cache
def catalogue(part: str) -> Catalogue:
    return load(PARTS[part].mistakes)


@functools.cache
def student_tests(part: str) -> ModuleType:
    """The part's student test module (test_diffusion, ...): its FUNCTIONS and PART."""
    return importlib.import_module(PARTS[part].tests)


@functools.cache
def reference(part: str, set_name: str) -> dict:
    row = PARTS[part]
    return grading.load_reference(ROOT / row.public if set_name == "public" else ROOT / "tools" / "reference" / row.hidden)


def checks(part: str, cls: type, set_name: str) -> dict[str, str | None]:
    """{test id: None if it passed, else its message} for the whole test file with `cls` under test."""
    return grading.run_checks(student_tests(part), {PARTS[part].fixture: cls}, reference(part, set_name))


def group(part: str, test_id: str) -> str:
    """The function a test checks: test_p_sample_loop_steps[...] -> p_sample_loop."""
    name = test_id.split("[")[0][len("test_"):]
    functions = sorted(student_tests(part).FUNCTIONS, key=len, reverse=True)
    return next(f for f in functions if name == f or name.startswith(f + "_"))


def affects(part: str, function: str) -> set[str]:
    """The functions whose tests a mistake in `function` may fail: its own and those that run it end to end."""
    return {function} | {g for g, deps in student_tests(part).PART.depends_on.items() if function in deps}


def _variants() -> list:
    """(part, set, the solution or an alternative class), for every part."""
    return [pytest.param(part, set_name, cls, id=f"{part}-{set_name}-{cls.__name__}", marks=_marks(set_name))
            for part in PARTS for set_name in SETS
            for cls in [catalogue(part).base, *catalogue(part).alternative_classes()]]


def _mistakes() -> list:
    return [pytest.param(part, set_name, m, id=f"{part}-{set_name}-{m.key}", marks=pytest.mark.slow)
            for part in PARTS for set_name in SETS for m in catalogue(part).mistakes]


@pytest.mark.parametrize("part", PARTS)
def test_the_catalogue_covers_every_function(part):
    row, book = PARTS[part], catalogue(part)
    assert row.mistakes, f"Part {row.number}'s row in tools/autograder/parts.py names no mistakes catalogue"
    assert book.base.__name__ == row.cls, f"{row.mistakes} catalogues {book.base.__name__}, the row says {row.cls}"
    keys = [m.key for m in book.mistakes]
    assert len(set(keys)) == len(keys), sorted(k for k in keys if keys.count(k) > 1)
    assert all(m.key.startswith(m.function + ".") for m in book.mistakes), [m.key for m in book.mistakes]
    assert {m.function for m in book.mistakes} == set(student_tests(part).FUNCTIONS)


@pytest.mark.parametrize("part", PARTS)
def test_there_are_ten_other_correct_implementations(part):
    assert len(catalogue(part).alternatives) >= 10, sorted(catalogue(part).alternatives)


@pytest.mark.parametrize(("part", "set_name", "variant"), _variants())
def test_correct_implementations_pass(part, set_name, variant):
    results = checks(part, variant, set_name)
    assert {group(part, name) for name in results} == set(student_tests(part).FUNCTIONS)  # every function was checked
    failures = {name: message for name, message in results.items() if message}
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


@pytest.mark.parametrize(("part", "set_name", "mistake"), _mistakes())
def test_each_mistake_fails_and_is_named(part, set_name, mistake: Mistake):
    results = checks(part, mistake.make_class(), set_name)
    failures = {name: message for name, message in results.items() if message}
    own = [message for name, message in failures.items() if group(part, name) == mistake.function]
    assert own, f"{mistake.key} passes every {mistake.function} test"
    phrase = mistake.title if mistake.detect == "output" else mistake.expect
    assert any(phrase in message for message in own), f"no {mistake.function} failure names {phrase!r}:\n" + "\n".join(own)
    assert {group(part, name) for name in failures} <= affects(part, mistake.function), sorted(failures)
    for message in failures.values():  # clean one-paragraph feedback, always about a named function
        assert re.match(r"\w+", message).group(0) in student_tests(part).FUNCTIONS and "Traceback" not in message
