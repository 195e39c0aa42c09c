"""The check before training: one loss and two samples on the training device, in seconds.

A tensor created on the wrong device or an output of the wrong shape then stops the run at once,
as one line naming the function, the error and the line of your code it came from, instead of at
the first step or at the first sample grid an hour later. `Trainer.check_model` runs these checks.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from utils import UserError

# The training machinery's own files: left out of the chain of calls a failure line shows, so that it
# starts at the model's code (diffusion.py, energy.py, a trainer's compute_loss).
MACHINERY_FILES = ("trainer.py", "evaluation.py", "preflight.py")


def check_loss(compute_loss: Callable[[], torch.Tensor], batch_shape: tuple[int, ...], device: torch.device,
               tests: str) -> None:
    """`compute_loss()` must give a 0-dim tensor whose backward runs.

    Args:
        batch_shape: the images' shape [B, 3, S, S], named in the message if the loss is not a scalar.
        tests: the student test file that checks the functions involved, named in the message.
    Raises:
        UserError: which function failed on which device, with the error and its line.
    """
    with names_the_failure("forward", device, tests):
        loss = compute_loss()
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            shape = list(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise UserError(f"forward returned {shape} for a batch {list(batch_shape)}; the loss must be a "
                            "scalar (0-dim) tensor: average over the batch and the pixels")
        loss.float().backward()


def check_samples(sample: Callable[[int], torch.Tensor], image_shape: tuple[int, ...], device: torch.device,
                  tests: str) -> None:
    """`sample(2)` must give images [2, *image_shape] on `device`.

    Raises:
        UserError: which function failed on which device, or what the samples' shape or device was.
    """
    expected = (2, *image_shape)
    with names_the_failure("sample", device, tests):
        images = sample(2)
        if not isinstance(images, torch.Tensor) or tuple(images.shape) != expected:
            shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise UserError(f"sample(2) returned {shape}; expected images {list(expected)}")
        if images.device != device:
            raise UserError(f"sample(2) returned images on {images.device}, not on the model's device "
                            f"{device}: create x_T with the model's device")


def first_rows(batch, n: int):
    """The first n examples of a batch: a tensor [B, ...] or a tuple of them."""
    if isinstance(batch, (tuple, list)):
        return type(batch)(first_rows(part, n) for part in batch)
    return batch[:n]


@contextlib.contextmanager
def names_the_failure(function: str, device: torch.device, tests: str):
    """Turn an error inside the model's code into one UserError line naming where it happened."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 (the student's code can raise anything)
        raise UserError(failure_line(function, device, error, tests)) from None


def failure_line(function: str, device: torch.device, error: BaseException, tests: str = "test_diffusion.py") -> str:
    """`forward` fails on cuda:0: RuntimeError: ... (diffusion.py line 72, in extract; via forward > p_losses > ...)."""
    here = Path(__file__).resolve().parent
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if Path(f.filename).resolve().parent == here and Path(f.filename).name not in MACHINERY_FILES]
    first_line = (str(error).strip().splitlines() or [""])[0][:300]
    where = ""
    if frames:
        last = frames[-1]
        chain, previous = [], None
        for f in frames:  # diffusion.py forward > p_losses > unet.py forward > ...
            name = Path(f.filename).name
            chain.append(f.name if name == previous else f"{name} {f.name}")
            previous = name
        where = f" ({Path(last.filename).name} line {last.lineno}, in {last.name}; via {' > '.join(chain)})"
        function = frames[0].name if frames[0].name in ("forward", "sample") else function
    hint = (f" Create every tensor on the device of the input (device=x.device), then check with pytest {tests}."
            if "device" in first_line.lower() else f" Check it with pytest {tests}.")
    return (f"`{function}` fails on {device} before training: {type(error).__name__}: {first_line}{where}.{hint}")
