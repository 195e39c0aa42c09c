"""The machinery behind the test files (test_diffusion.py and the later parts' tests): you need not read it.

A test file built on it has three kinds of code:
    tests         judge what your code did and fail with a message saying what is wrong;
    observations  functions marked @observation: they build the objects, run your functions through
                  `call`, and return what they saw as plain data (tensors, numbers, strings, lists,
                  dicts), never a verdict;
    stand-ins     small fixed replacements for what your functions call (the network, the noise).

Tests reach your code only through `observe(observation, student_class, *args)`. Under pytest the
observation runs right here. The Gradescope grader runs it in a separate process under an
unprivileged user and keeps the tests and the expected values in its own process, so a submission
can neither see nor change them.

`call` is where your function runs: from a fresh torch state (default dtype float32, gradients on),
within a time limit; any exception becomes a one-paragraph failure charged to the innermost of your
functions it came from, and a function that changes torch's global settings fails naming the change.

`fake_gpu()` runs an observation on a stand-in GPU (torch's FakeTensorMode on the "meta" device:
tensors that have a device and a shape but no values, in every torch build), so a tensor created
without `device=` shows up on a CPU-only machine as it would on Colab: as an operation that mixes
two devices.

The package's other modules: cases.py (a part's declaration, `Part`, and the judging of its reference
cases), seams.py (fixed randomness and spies), stand_ins.py (the stand-in networks and the spies Parts 1
and 2 share), checks.py (verdicts several parts share), runs_<part>.py (how each part's tests run your
code). The instructors' README says how a new part is declared.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import re
import signal
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

ATOL = 1e-5
RTOL = 1e-5
TIME_LIMIT_S = float(os.environ.get("DIFFUSION_TEST_TIMEOUT", "10"))  # per call of your code
SEED = 1871  # torch's generator is seeded with this before every observation

# Registered by the test modules (see `register`).
STUDENT_FUNCTIONS: set[str] = set()
ERROR_HINTS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"found at least two devices|Expected all tensors to be on the same device"),
     "A tensor created without device= lives on the CPU; on a GPU it meets tensors on the GPU. "
     "Create it with device=x.device (or move it with .to(x.device))."),
]
_HARNESS_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep  # this package: its frames are not yours
_HARNESS_FILES: set[str] = set()
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_STDLIB_DIR = os.path.dirname(os.path.abspath(contextlib.__file__)) + os.sep

# The grader sets this to its sandbox; then `import_student` returns a RemoteClass and `observe`
# runs observations in the sandbox's process.
SANDBOX = None


def register(test_file: str, functions: tuple[str, ...], hints: list[tuple[str, str]] = ()) -> None:
    """A test module declares its file (its frames are not yours), your functions, and error hints."""
    _HARNESS_FILES.add(os.path.abspath(test_file))
    STUDENT_FUNCTIONS.update(functions)
    ERROR_HINTS.extend((re.compile(pattern), hint) for pattern, hint in hints)


class GradingError(Exception):
    """A wrong call noticed by a stand-in; the message explains it."""


class TimedOut(BaseException):
    """Raised inside your code when a call runs past the time limit (a BaseException, so that an
    `except Exception` in your code does not swallow it)."""


class Inconclusive(Exception):
    """The stand-in GPU cannot run this code (it reads a tensor's values): nothing to report."""


class Unknown:
    """What an observation records for an object that is not plain data: its type and its repr."""

    def __init__(self, type_name: str, text: str):
        self.type_name, self.text = type_name, text

    def __repr__(self) -> str:
        return self.text


class RemoteClass:
    """Stands for the student's class when it lives in the grader's sandbox, not in this process."""

    def __init__(self, module: str, attribute: str, sandbox):
        self.module, self.attribute, self.sandbox = module, attribute, sandbox

    def __repr__(self) -> str:
        return f"<{self.module}.{self.attribute} in the sandbox>"


# ----------------------------------------------------------------------------
# Failing with a message
# ----------------------------------------------------------------------------


def fail(lines: list[str] | str, blame: tuple[str, ...] = ()) -> None:
    """Fail the test with a clean message. `blame` names the functions (called by the one under test)
    that cause the failure, so that the grader charges it to them instead."""
    failure = pytest.fail.Exception("\n".join([lines] if isinstance(lines, str) else lines), pytrace=False)
    failure.blame = tuple(blame)
    raise failure from None  # the message says it all: no chained traceback


def times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def dtype_name(x: torch.Tensor) -> str:
    return str(x.dtype).replace("torch.", "")


# ----------------------------------------------------------------------------
# Importing and calling your code
# ----------------------------------------------------------------------------


def import_student(module_name: str, attribute: str):
    """`module_name.attribute` from your file; if the file cannot be imported, one line saying where."""
    if SANDBOX is not None:
        return RemoteClass(module_name, attribute, SANDBOX)
    problem = None
    try:
        module = importlib.import_module(module_name)
    except BaseException as error:  # noqa: BLE001 - a syntax error, or anything raised at import
        problem = describe_import_error(module_name, error)
    else:
        if not hasattr(module, attribute):
            problem = f"{module_name}.py has no {attribute}: keep the class name of the handout's {module_name}.py"
    if problem:  # pytest shows just this line, once, as the test file's collection error
        raise pytest.fail.Exception(problem, pytrace=False)
    return getattr(module, attribute)


def describe_import_error(module_name: str, error: BaseException) -> str:
    """One line: which file and line could not be imported, and why."""
    file = f"{module_name}.py"
    if isinstance(error, ModuleNotFoundError) and error.name == module_name:
        return f"no {file} found next to the test file: put your {file} (with that name) beside it"
    if isinstance(error, SyntaxError):
        line = f" line {error.lineno}" if error.lineno else ""
        text = f": {error.text.strip()}" if error.text else ""
        return f"{Path(error.filename or file).name}{line}: {type(error).__name__}: {error.msg}{text}"
    frames = traceback.extract_tb(error.__traceback__)
    mine = [f for f in frames if Path(f.filename).name == file] or frames[-1:]
    where = f"{file} line {mine[-1].lineno}" if mine else file
    hint = ""
    if isinstance(error, ModuleNotFoundError):
        hint = f" (use only the packages in requirements.txt; {error.name} is not one of them)"
    return f"{where}: importing {file} raised {type(error).__name__}: {error}{hint}"


def _is_student_frame(frame: traceback.FrameSummary) -> bool:
    path = os.path.abspath(frame.filename)
    return not (path in _HARNESS_FILES or path.startswith((_HARNESS_DIR, _TORCH_DIR)) or path.startswith(_STDLIB_DIR)
                or frame.filename.startswith("<"))


def _culprit(error: BaseException, name: str) -> tuple[str, list[traceback.FrameSummary]]:
    """The innermost of your functions in the traceback (or `name`), and your frames from `name` on."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if _is_student_frame(f)]
    functions = [f.name for f in frames if f.name in STUDENT_FUNCTIONS]
    start = max([i for i, f in enumerate(frames) if f.name == name] or [max(len(frames) - 3, 0)])
    return (functions[-1] if functions else name), frames[start:]


def _where(frames: list[traceback.FrameSummary]) -> str:
    return "; ".join(f"{Path(f.filename).name} line {f.lineno} in {f.name}: {f.line}" for f in frames[-3:])


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise TimedOut inside the code after `seconds` (Unix main thread; elsewhere pytest-timeout stops it)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TimedOut()

    previous_handler = signal.signal(signal.SIGALRM, expire)
    previous_delay, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:  # an outer timer (pytest-timeout's) keeps running
            signal.setitimer(signal.ITIMER_REAL, max(previous_delay - (time.monotonic() - start), 0.01))


def reset_torch_state() -> None:
    """The global settings every call starts from."""
    torch.set_default_dtype(torch.float32)
    torch.set_grad_enabled(True)


def _torch_state() -> dict[str, Any]:
    return {"default dtype": torch.get_default_dtype(), "gradient mode": torch.is_grad_enabled(),
            "inference mode": torch.is_inference_mode_enabled(), "seed": torch.initial_seed()}


def _describe_changes(before: dict, after: dict) -> list[str]:
    changes = []
    if after["default dtype"] != before["default dtype"]:
        changes.append(f"the default dtype to {str(after['default dtype']).replace('torch.', '')} "
                       "(torch.set_default_dtype)")
    if after["gradient mode"] != before["gradient mode"]:
        changes.append("gradients off for everything after it (torch.set_grad_enabled(False)); "
                       "use @torch.no_grad() or `with torch.no_grad():` instead")
    if after["inference mode"] != before["inference mode"]:
        changes.append("inference mode left on")
    if after["seed"] != before["seed"]:
        changes.append("a new seed for torch's random generator (torch.manual_seed): every call would then draw "
                       "the same numbers, e.g. the same t at every training step")
    return changes


def call(name: str, fn: Callable, *args, **kwargs):
    """Call your function `name`; turn whatever goes wrong into a one-paragraph failure."""
    reset_torch_state()
    before = _torch_state()
    try:
        with _time_limit(TIME_LIMIT_S):
            result = fn(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # noqa: BLE001 - any bug in student code becomes a readable failure
        reset_torch_state()
        _explain(name, error)
    after = _torch_state()
    reset_torch_state()
    changes = _describe_changes(before, after)
    if changes:
        fail(f"{name} changed torch's global settings: " + "; ".join(changes)
             + ". A function must leave them as it found them (they would change every other function too).")
    return result


def _explain(name: str, error: BaseException) -> None:
    culprit, frames = _culprit(error, name)
    blame = (culprit,) if culprit != name else ()
    inner = f"{name}: in {culprit}, " if blame else f"{name}: "
    if isinstance(error, NotImplementedError):
        if blame:
            fail(f"{name}: cannot be checked until {culprit} is implemented ({culprit}: not implemented yet)", blame)
        fail(f"{name}: not implemented yet")
    if isinstance(error, TimedOut):
        where = f"\n  at {_where(frames)}" if frames else ""
        fail(f"{name}: timed out after {TIME_LIMIT_S:g} s" + (f" in {culprit}" if blame else "")
             + f" (an infinite loop?){where}", blame)
    if isinstance(error, GradingError):
        fail(inner + str(error), blame)
    if _FAKE_MODE_ERRORS and isinstance(error, _FAKE_MODE_ERRORS):
        raise Inconclusive(str(error)) from None
    if isinstance(error, SystemExit):
        fail(inner + "called exit() (sys.exit): a function must return its result", blame)
    message = f"{name} raised" if not blame else f"{name}: {culprit} raised"
    kind = "RuntimeError" if type(error).__module__.startswith("torch._subclasses") else type(error).__name__
    text = str(error).replace("meta", "cuda") if is_fake_mode() else str(error)  # as a real GPU would say it
    lines = [f"{message} {kind}: {text}".rstrip()]
    if frames:
        lines.append(f"  at {_where(frames)}")
    lines += [hint for pattern, hint in ERROR_HINTS if pattern.search(str(error))]
    fail(lines, blame)


# ----------------------------------------------------------------------------
# Observations
# ----------------------------------------------------------------------------


_OBSERVATIONS: dict[tuple[str, str], Callable] = {}


def observation(fn: Callable) -> Callable:
    """Mark `fn(student_class, *args)` as an observation: it runs student code and returns plain data."""
    _OBSERVATIONS[(fn.__module__, fn.__name__)] = fn
    return fn


def find_observation(module: str, name: str) -> Callable:
    """The observation `name` of `module`, as the grader's sandbox finds it. A module of observations names
    its part's test module (TESTS), which is imported too: it registers the student's functions and the
    error hints that failures raised in the sandbox are explained with."""
    loaded = importlib.import_module(module)
    if getattr(loaded, "TESTS", None):
        importlib.import_module(loaded.TESTS)
    return _OBSERVATIONS[(module, name)]


def observe(fn: Callable, student_class, *args):
    """What observation `fn` sees when it runs `student_class`'s code on `args` (plain data)."""
    if isinstance(student_class, RemoteClass):
        return student_class.sandbox.observe(fn.__module__, fn.__name__, student_class, args)
    return run_observation(fn, student_class, args)


def run_observation(fn: Callable, student_class, args: tuple):
    reset_torch_state()
    torch.manual_seed(SEED)
    return plain(fn(student_class, *args))


def plain(value):
    """`value` as plain data: tensors (detached), numbers, strings, lists, tuples, dicts; anything else
    as an Unknown (its type name and repr). Integers of any kind (numpy's too) become int."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if value is None or isinstance(value, (bool, int, float, str)):
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (torch.device, torch.dtype)):
        return str(value)
    if hasattr(value, "__index__") and not isinstance(value, torch.Tensor):
        try:
            return int(value.__index__())
        except Exception:  # noqa: BLE001 - an odd object: described below
            pass
    try:
        text = repr(value)[:200]
    except Exception:  # noqa: BLE001 - a repr that raises
        text = "?"
    return Unknown(type(value).__name__, text)


def snapshot(value):
    """A copy of `value` as it is now (tensors cloned, in containers too): what a spy records, since the
    code under test may go on changing the tensors it was given or returned, in place."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(snapshot(v) for v in value)
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    return value


def encode(value):
    """Plain data for torch.save(weights_only-loadable): an Unknown becomes {"__unknown__": [type, repr]}."""
    if isinstance(value, Unknown):
        return {"__unknown__": [value.type_name, value.text]}
    if isinstance(value, (list, tuple)):
        return type(value)(encode(v) for v in value)
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


def decode(value):
    if isinstance(value, dict):
        if set(value) == {"__unknown__"}:
            return Unknown(*[str(v) for v in value["__unknown__"]][:2])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(decode(v) for v in value)
    return value


def type_name(value) -> str:
    return value.type_name if isinstance(value, Unknown) else type(value).__name__


# ----------------------------------------------------------------------------
# The stand-in GPU
# ----------------------------------------------------------------------------

try:
    from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException, FakeTensorMode
    _FAKE_MODE_ERRORS: tuple = (DataDependentOutputException, DynamicOutputShapeException)
except ImportError:  # pragma: no cover - every torch this homework supports has it
    FakeTensorMode, _FAKE_MODE_ERRORS = None, ()

# "meta", not a fake "cuda": a CPU-only torch aborts on autograd through fake CUDA tensors.
FAKE_GPU = torch.device("meta")
_fake_depth = 0


@contextlib.contextmanager
def fake_gpu() -> Iterator[torch.device]:
    """Inside: tensors have devices and shapes but no values; an operation on tensors of two devices
    raises as on a real GPU (tensors made before are converted, keeping their device)."""
    global _fake_depth
    log = logging.getLogger("torch._subclasses.fake_tensor")  # it prints a stack for every failed operation
    level, log.level = log.level, logging.CRITICAL
    _fake_depth += 1
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            yield FAKE_GPU
    finally:
        _fake_depth -= 1
        log.setLevel(level)


def is_fake_mode() -> bool:
    """Whether code runs on the stand-in GPU (tensor values cannot be read there)."""
    return _fake_depth > 0


def to_device(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """module.to(device) for fake tensors: parameters and buffers replaced one by one."""
    for submodule in module.modules():
        for key, parameter in submodule._parameters.items():
            if parameter is not None:
                submodule._parameters[key] = torch.nn.Parameter(parameter.to(device), parameter.requires_grad)
        for key, buffer in submodule._buffers.items():
            if buffer is not None:
                submodule._buffers[key] = buffer.to(device)
    return module


def device_of(requested) -> str:
    """The device a `device` argument names, as a string ("cpu", "cuda:0"); None stays None."""
    if requested is None:
        return "None"
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        return repr(requested)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    return str(device)


# ----------------------------------------------------------------------------
# Comparing with expected values
# ----------------------------------------------------------------------------


def where(shape: tuple[int, ...], flat: int) -> str:
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    index.reverse()
    if len(index) == 4:
        return f"example {index[0]}, channel {index[1]}, pixel ({index[2]}, {index[3]})"
    return f"index {index}"


def tolerance(expected: torch.Tensor) -> torch.Tensor:
    """How far a value may be from `expected` (float64): ATOL + RTOL * the largest |expected|. Relative to
    the tensor's scale, not to each entry: where values reach 1e3 (x0_hat at t = T-1, an unclamped chain),
    float32 rounding on another CPU or in another correct order of operations exceeds 1e-5 of a small entry."""
    expected = expected.detach().double().cpu()
    return ATOL + RTOL * (expected.abs().max() if expected.numel() else expected.new_zeros(()))


def close(got, expected: torch.Tensor) -> bool:
    return (isinstance(got, torch.Tensor) and got.shape == expected.shape and bool(
        ((got.detach().double().cpu() - expected.detach().double().cpu()).abs() <= tolerance(expected)).all()))


def difference(what: str, got, expected: torch.Tensor) -> str | None:
    """None if `got` matches `expected`; otherwise a sentence saying how it differs."""
    if not isinstance(got, torch.Tensor):
        hint = " (a missing `return`?)" if got is None else ""
        return f"returned {type_name(got)}{hint}; expected a tensor ({what})"
    if got.shape != expected.shape:
        kind = "a scalar, shape []" if expected.dim() == 0 else f"shape {list(expected.shape)}"
        return f"returned shape {list(got.shape)}; expected {kind} ({what})"
    if got.dtype != expected.dtype:
        return f"returned {dtype_name(got)}; expected {dtype_name(expected)} (compute in any precision, return the inputs' dtype)"
    if got.device != expected.device:
        return f"returned a tensor on {got.device}; expected it on {expected.device}, where the inputs are"
    got_d, exp_d = got.detach().double().cpu(), expected.double().cpu()
    bad_values = ~torch.isfinite(got_d)
    if bad_values.any():
        first = int(bad_values.flatten().nonzero()[0])
        return f"{int(bad_values.sum())} values are NaN or infinite, the first at {where(tuple(got.shape), first)}"
    error = (got_d - exp_d).abs()
    wrong = error > tolerance(exp_d)
    if not wrong.any():
        return None
    if got.dim() == 0:
        return f"{what} is {got_d.item():.6g}; expected {exp_d.item():.6g}"
    flat = int(error.flatten().argmax())
    return (f"{what} differs from the reference: largest error {error.max().item():.3g} at {where(tuple(got.shape), flat)} "
            f"(yours {got_d.flatten()[flat].item():.6g}, expected {exp_d.flatten()[flat].item():.6g}); "
            f"{int(wrong.sum())} of {wrong.numel()} values are off")


# ----------------------------------------------------------------------------
# Reference files
# ----------------------------------------------------------------------------


_REFERENCES: dict[str, dict] = {}


def load_reference(path: str | os.PathLike) -> dict:
    """A reference dict (plain tensors, ints and strings); each case learns its function and its file."""
    path = Path(path)
    key = str(path.resolve())
    if key not in _REFERENCES:
        if not path.is_file():
            raise FileNotFoundError(f"reference file {path} not found: restore it from the handout")
        reference = torch.load(path, map_location="cpu", weights_only=True)
        for function, cases in reference["cases"].items():
            for case in cases:
                case["function"], case["reference"] = function, reference
        _REFERENCES[key] = reference
    return _REFERENCES[key]


class Memo:
    """Results per student class (weakly held: a class that is gone takes its results with it)."""

    def __init__(self):
        self._by_class: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, student_class, key, compute: Callable):
        table = self._by_class.setdefault(student_class, {})
        if key not in table:
            try:
                table[key] = ("value", compute())
            except pytest.fail.Exception as failure:
                table[key] = ("failure", failure)
        kind, value = table[key]
        if kind == "failure":
            raise value
        return value


# ----------------------------------------------------------------------------
# Running a test module's checks without pytest (for the grader and the instructors' scripts)
# ----------------------------------------------------------------------------


def collect(module, reference: dict | None = None) -> list[tuple[str, Callable, dict]]:
    """(test id, test function, its parameters) for every test in `module`, in file order, with pytest's ids.
    A test parametrized over `case` is named test_<function> and takes that function's cases of
    `reference` (default: the ones the module was parametrized with)."""
    collected = []
    for name, test in vars(module).items():
        if not (name.startswith("test_") and inspect.isfunction(test)):
            continue
        combinations = [("", {})]
        for mark in getattr(test, "pytestmark", []):
            if mark.name != "parametrize":
                continue
            argnames, values = mark.args[0], list(mark.args[1])
            names = [a.strip() for a in argnames.split(",")] if isinstance(argnames, str) else list(argnames)
            ids = mark.kwargs.get("ids")
            if names == ["case"] and reference is not None:
                values = reference["cases"].get(name[len("test_"):], [])
            labels = [(ids(v) if callable(ids) else ids[i]) if ids is not None else f"{names[0]}{i}"
                      for i, v in enumerate(values)]
            rows = [dict(zip(names, v)) if len(names) > 1 else {names[0]: v} for v in values]
            combinations = [(f"{a}-{b}" if a else str(b), {**p, **row})
                            for a, p in combinations for b, row in zip(labels, rows)]
        for label, parameters in combinations:
            collected.append((f"{name}[{label}]" if label else name, test, parameters))
    return collected


def run_tests(module, fixtures: dict, reference: dict | None = None) -> Iterator[dict]:
    """Run each test of `module`; yield {"name", "outcome", "message", "blame"} after each one."""
    for test_id, test, parameters in collect(module, reference):
        arguments = {n: fixtures[n] for n in inspect.signature(test).parameters if n not in parameters}
        record = {"name": test_id, "outcome": "passed", "message": "", "blame": []}
        try:
            test(**arguments, **parameters)
        except pytest.fail.Exception as failure:
            record.update(outcome="failed", message=str(failure.msg), blame=list(getattr(failure, "blame", ())))
        yield record


def run_checks(module, fixtures: dict, reference: dict | None = None) -> dict[str, str | None]:
    """Every check of `module`: {test id: None if it passed, else the failure text}."""
    return {r["name"]: (r["message"] if r["outcome"] != "passed" else None) for r in run_tests(module, fixtures, reference)}
