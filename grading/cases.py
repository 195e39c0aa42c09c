"""Judging reference cases: fixed inputs, fixed randomness, stored outputs, named mistakes and blame.

A part's test file declares a `Part` (its functions, its reference file, what each output is, the
observation that runs one case); `PART.check(student_class, case)` then compares the output with the
stored one and explains any difference, and `reference_tests` makes the test_<function>[case] tests.

What the case observation returns (plain data):
    outputs           [first call's output, second call's] on the same object with the same inputs
    calls             {seam: [calls in the first call, in the second]}
    problem           optional: a sentence that replaces the comparison (e.g. "returned a float")
    notes             optional: lines to add when the output is wrong (e.g. a spy that was never called)
    requires_grad     optional: False when a loss that must carry a gradient does not
    changed_arguments optional: names of the inputs the function changed in place
    changed_buffers   optional: names of the object's buffers it changed
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import grading
from grading import checks, close, fail, observe, times


@dataclass
class Part:
    """A part's declaration: its test file, the student's class, its functions, its reference cases and how
    its functions are judged on them. Creating it registers the functions (for blame) and imports the class."""
    test_file: str  # the test module's __file__: its frames are not the student's
    functions: tuple[str, ...]  # the student's functions, in the order the tests check them
    student: tuple[str, str]  # (module, class), e.g. ("diffusion", "GaussianDiffusion")
    reference_file: tuple[str, str]  # (environment variable naming another file, file name in data/reference/)
    what: dict[str, str]  # function -> what its output is, for messages ("x_t", "the loss")
    inputs: tuple[str, ...]  # the keys of a case that the code under test may see
    observe_case: Callable  # the observation that runs one case (see the module docstring)
    depends_on: dict[str, tuple[str, ...]] = field(default_factory=dict)  # function -> the ones it runs end to end
    seams: tuple[str, ...] = ("noise_like",)  # where the randomness comes from
    device: torch.device = torch.device("cpu")
    error_hints: list[tuple[str, str]] = field(default_factory=list)  # (error pattern, what to do) for exceptions
    in_place_hints: dict[str, str] = field(default_factory=dict)  # function -> a hint after "changed the ... in place"
    # (function, got, expected, seen) -> a sentence saying how `got` differs, or None; default grading.difference
    compare: Callable | None = None
    fixture_name: str = "diffusion_class"  # the tests' fixture that holds the class under test
    observe_on_gpu: Callable | None = None  # observation(student_class, function, config) on the stand-in GPU
    gpu_config: dict | None = None  # its settings
    memo: grading.Memo = field(default_factory=grading.Memo)

    def __post_init__(self):
        grading.register(self.test_file, self.functions, self.error_hints)
        self.student_class = grading.import_student(*self.student)
        variable, name = self.reference_file
        default = Path(self.test_file).resolve().parent / "data" / "reference" / name
        self.reference = grading.load_reference(os.environ.get(variable) or default)

    def fixture(self) -> Callable:
        """The pytest fixture (named fixture_name) that hands the tests the class under test (the student's)."""
        return pytest.fixture(lambda: self.student_class, name=self.fixture_name)

    def tests_of(self, function: str, cases: str | None = None, gpu: bool = False) -> dict[str, Callable]:
        """The tests of `function` that the declaration makes, for globals().update(...): test_<function>[case]
        on its stored cases (`cases` says what they check), and with gpu, test_<function>_on_a_gpu."""
        tests = reference_tests(self, self.fixture_name, {function: cases}) if cases else {}
        if gpu:
            tests.update(gpu_tests(self.fixture_name, (function,), self.observe_on_gpu, self.gpu_config))
        return tests

    def comparing(self, fn: Callable) -> Callable:
        """Decorator: `fn(function, got, expected, seen)` compares instead of grading.difference."""
        self.compare = fn
        return fn

    def cases(self, function: str) -> list[dict]:
        return self.reference["cases"].get(function, [])

    def case(self, function: str, case_id: str) -> dict:
        return next(c for c in self.cases(function) if c["id"] == case_id)

    def outputs(self, student_class, case: dict) -> dict:
        """What the case observation saw on this case (computed once per class and case)."""
        key = (id(case["reference"]), case["function"], case["id"])
        inputs = {k: case[k] for k in self.inputs if k in case}
        return self.memo.get(student_class, key, lambda: observe(self.observe_case, student_class, case["function"], inputs))

    def check(self, student_class, case: dict) -> None:
        """Compare one stored case with the student's output; explain any difference."""
        function = case["function"]
        seen = self.outputs(student_class, case)
        label = f"{function} [{case['label']}]"
        got = seen["outputs"][0]
        problem = seen.get("problem")
        if problem is None:
            expected = case["expected"].to(self.device)
            problem = (self.compare(function, got, expected, seen) if self.compare
                       else grading.difference(self.what[function], got, expected))
        if problem is not None:
            self._fail_explained(student_class, case, seen, f"{label}: {problem}")
        self._check_again(case, seen, label)

    def _fail_explained(self, student_class, case: dict, seen: dict, first: str) -> None:
        function, got = case["function"], seen["outputs"][0]
        lines = [first, *seen.get("notes", [])]
        known = self.known_mistakes(student_class, function, got, case)
        lines += [line for _, line in known]
        blame = ()
        if all(culprit != function for culprit, _ in known):  # no mistake of this function itself
            for seam in self.seams:
                calls, needed = seen["calls"].get(seam, [None])[0], case.get(f"{seam}_calls")
                if None not in (calls, needed) and calls != needed:
                    lines.append(f"{seam} was called {times(calls)}; this case needs {times(needed)}"
                                 + (" (noise drawn elsewhere, e.g. torch.randn, bypasses the seam the grader uses)"
                                    if calls < needed else ""))
            if isinstance(got, torch.Tensor) and not close(seen["outputs"][1], got):
                lines.append(f"{function} gives different results for the same inputs and the same "
                             f"{' and '.join(self.seams)} values: it draws randomness elsewhere (torch.randn, "
                             f"randn_like, rand, randint). Draw it with {', '.join(f'self.{s}' for s in self.seams)}.")
            blame = self.failing_dependencies(student_class, function, case["reference"])
            lines += [f"Note: {d}, which {function} calls, fails its own tests: fix {d} first." for d in blame]
        fail(lines, blame)

    def _check_again(self, case: dict, seen: dict, label: str) -> None:
        """The right output: what else the function did (changed its inputs, lost the gradient, kept state)."""
        function, got = case["function"], seen["outputs"][0]
        changed = seen.get("changed_arguments")
        if changed:
            fail(f"{label}: {function} changed the {changed[0]} it was given, in place"
                 + self.in_place_hints.get(function, ": work on a copy"))
        if seen.get("requires_grad") is False:
            fail(f"{label}: the loss has no gradient (computed under torch.no_grad(), or detached), so training "
                 "could not learn from it: compute it with gradients on")
        for seam, (first, second) in seen["calls"].items():
            if second != first:
                fail(f"{label}: called a second time on the same object, it called {seam} {times(second)} instead "
                     f"of {times(first)} (noise kept on self from an earlier call?)")
        if not close(seen["outputs"][1], got):
            buffers = seen.get("changed_buffers")
            changed = f" It changed {', '.join(buffers)} in place." if buffers else ""
            fail(f"{label}: called a second time on the same object with the same inputs and noise, it returns "
                 f"something else: it keeps state between calls or changes the object.{changed}")

    def known_mistakes(self, student_class, function: str, got, case: dict) -> list[tuple[str, str]]:
        """(function the mistake is in, sentence naming it) for each stored mistake the outputs equal, in
        every case of `function` where that mistake is stored."""
        if not isinstance(got, torch.Tensor):
            return []
        got = got.detach().cpu()
        reference, found = case["reference"], []
        for key, output in case["mistakes"].items():
            if not (got.dtype == output.dtype and close(got, output)):
                continue
            others = [c for c in reference["cases"][function] if key in c["mistakes"] and c is not case]
            if all(close(self._output_or_none(student_class, c), c["mistakes"][key]) for c in others):
                mistake = reference["mistakes"][key]
                where = "" if mistake["function"] == function else f" in {mistake['function']}"
                found.append((mistake["function"],
                              f"This matches a known mistake{where}: {mistake['title']}.\n  {mistake['why']}"))
        return found

    def _output_or_none(self, student_class, case: dict):
        try:
            return self.outputs(student_class, case)["outputs"][0]
        except pytest.fail.Exception:
            return None

    def failing_dependencies(self, student_class, function: str, reference: dict) -> tuple[str, ...]:
        """The functions `function` calls that fail a reference case on their own (not because of another one)."""
        failing = []
        for dependency in self.depends_on.get(function, ()):
            for case in reference["cases"].get(dependency, []):
                try:
                    self.check(student_class, case)
                except pytest.fail.Exception as failure:
                    if not set(getattr(failure, "blame", ())) - {dependency}:
                        failing.append(dependency)
                        break
        return tuple(failing)


def _test(name: str, fixture: str, parameter: str | None, doc: str, body: Callable) -> Callable:
    """A test function named `name` taking the fixture `fixture` (and `parameter`), as pytest sees it."""
    def test(**arguments):
        body(arguments[fixture], arguments.get(parameter))
    names = [fixture] + ([parameter] if parameter else [])
    test.__signature__ = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    test.__name__ = test.__qualname__ = name
    test.__doc__ = doc
    return test


def reference_tests(part: Part, fixture: str, docs: dict[str, str]) -> dict[str, Callable]:
    """test_<function>[case] for each function in `docs` (what its cases check): the stored cases of the
    part's reference file, judged by part.check. A test file adds them with globals().update(...)."""
    return {f"test_{function}": pytest.mark.parametrize("case", part.cases(function), ids=case_id)(
        _test(f"test_{function}", fixture, "case", doc, part.check)) for function, doc in docs.items()}


def gpu_tests(fixture: str, functions: tuple[str, ...], observation: Callable, config: dict) -> dict[str, Callable]:
    """test_<function>_on_a_gpu for each of `functions`: the observation runs it on the stand-in GPU, where a
    tensor made on the CPU fails (grading.checks.on_gpu judges what it saw)."""
    def check(student_class, function: str) -> None:
        checks.on_gpu(function, observe(observation, student_class, function, config))
    return {f"test_{f}_on_a_gpu": _test(f"test_{f}_on_a_gpu", fixture, None, f"{f} keeps everything on its inputs' device.",
                                        lambda student_class, _, f=f: check(student_class, f)) for f in functions}


def case_id(case: dict) -> str:
    return case["id"]


def run_twice(function: str, obj, case: dict, device: torch.device, fresh_seams: Callable[[], dict],
              output: Callable | None = None, inspect: Callable | None = None) -> dict:
    """The part of a case observation every part shares: obj.<function> on the case's inputs twice, each
    time with fresh seams (fresh_seams() sets them on obj and returns them by name). output(out) is what
    is compared (default: out); inspect(out, args, seen) records more about a call."""
    seen = {"outputs": [], "calls": {}, "changed_arguments": []}
    for _ in range(2):
        seams = fresh_seams()
        args = [a.to(device, copy=True) if isinstance(a, torch.Tensor) else a for a in case["args"]]
        out = grading.call(function, getattr(obj, function), *args)
        seen["outputs"].append(output(out) if output else out)
        for name, seam in seams.items():
            seen["calls"].setdefault(name, []).append(len(seam.calls))
        if inspect:
            inspect(out, args, seen)
    return seen
