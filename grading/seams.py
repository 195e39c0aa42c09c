"""Stand-ins for the seams of a student's class (noise_like, uniform_like, draw_replay) and spies.

A reference case replaces each seam with a `Sequence` of the case's stored tensors; a spy test with a
`Recording` of fixed pseudo-random tensors. A spy replaces one of the student's functions with a fixed
stand-in and records copies of what it was given and returned (the caller may go on changing them).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from grading import GradingError, device_of, is_fake_mode, snapshot, times


class Sequence:
    """Stands in for a seam: hands out the reference's tensors, in order.

    `tensors` holds what a correct implementation draws, followed by spares, so that an implementation
    that draws too often still gets fixed values (and a recognisable output). `hint` ends the message
    about a wrong shape.
    """

    def __init__(self, name: str, tensors: list[torch.Tensor], needed: int, device: torch.device, hint: str = ""):
        self.name, self.needed, self.device, self.hint = name, needed, device, hint
        self.tensors = [z.to(device) for z in tensors]
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, shape, device=None) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        self.calls.append(shape)
        k = len(self.calls)
        if k > len(self.tensors):
            raise GradingError(f"{self.name} was called {times(k)}; this case needs {times(self.needed)}")
        z = self.tensors[k - 1]
        if tuple(z.shape) != shape:
            raise GradingError(f"{self.name} call {k} asked for shape {list(shape)}; the noise needed here has shape "
                               f"{list(z.shape)}{self.hint}")
        return z.to(device if device is not None else self.device, copy=True)


class Recording:
    """A seam that records its calls (shape, device) and returns fixed pseudo-random tensors of any shape:
    Gaussian, uniform on [0, 1) (`low=0`) or on [-1, 1) (`low=-1`)."""

    def __init__(self, device: torch.device, low: float | None = None):
        self.device, self.low = device, low
        self.calls: list[tuple[tuple[int, ...], str]] = []
        self.returned: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self, shape, device=None) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        self.calls.append((shape, device_of(device)))
        where = device if device is not None else self.device
        if is_fake_mode():
            return torch.zeros(shape, device=where)
        if self.low is None:
            z = torch.randn(shape, generator=self.generator)
        else:
            z = torch.rand(shape, generator=self.generator) * (1 - self.low) + self.low
        z = z.to(where)
        self.returned.append(z.clone())
        return z


class ReplaySequence:
    """Stands in for `draw_replay`: hands out the reference's (idx, fresh) pairs, in order."""

    def __init__(self, draws: list, device: torch.device):
        self.draws = [(idx.to(device), fresh.to(device)) for idx, fresh in draws]
        self.calls: list[int] = []

    def __call__(self, batch_size) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(batch_size)
        k = len(self.calls)
        if k > len(self.draws):
            raise GradingError(f"draw_replay was called {times(k)}; this case needs {times(len(self.draws))}")
        idx, fresh = self.draws[k - 1]
        if batch_size != len(idx):
            raise GradingError(f"draw_replay was called with batch_size = {batch_size!r}; this case's batch has "
                               f"{len(idx)} images")
        return idx.clone(), fresh.clone()


def forbid(message: str) -> Callable:
    """A seam that must not be called here: calling it fails with `message`."""
    def seam(*args, **kwargs):
        raise GradingError(message)
    return seam


def bind(function: str, names: tuple[str, ...], args, kwargs, defaults: dict | None = None) -> dict:
    """The arguments of a call of `function(names...)`, by name, keyword or positional alike."""
    defaults = defaults or {}
    signature = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                     default=defaults.get(n, inspect.Parameter.empty)) for n in names])
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as error:
        raise GradingError(f"{function} was called with the wrong arguments ({error}); "
                           f"call it as {function}({', '.join(names)})") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def spy(obj, function: str, names: tuple[str, ...], result: Callable, defaults: dict | None = None) -> list[dict]:
    """Replace obj.<function> with a spy returning result(arguments, k) for its k-th call (1, 2, ...); the
    list it returns fills with a copy of each call's arguments and result ("out")."""
    calls: list[dict] = []

    def spy_function(*args, **kwargs):
        bound = bind(function, names, args, kwargs, defaults)
        out = result(bound, len(calls) + 1)
        calls.append(snapshot(dict(bound, out=out)))
        return out

    setattr(obj, function, spy_function)
    return calls


def tensor_argument(function: str, name: str, what: str) -> Callable:
    """A check for a spy: the argument `name` is a tensor, or the call fails saying what to pass."""
    def check(bound: dict) -> torch.Tensor:
        value = bound[name]
        if not isinstance(value, torch.Tensor):
            raise GradingError(f"passed {name} = {type(value).__name__} to {function}; pass {what}")
        return value
    return check
