"""Checkpoints: everything a run needs to go on later, in `model.pt`, never left half-written.

A checkpoint holds the weights, their EMA, the optimizer's and the gradient scaler's states, the
step, the run's flags and the random state. It is written atomically (a temporary file, then a
rename: utils.atomic_torch_save), and a failing write is retried a few times, so that a Google
Drive mount that drops for a few seconds costs nothing and a crash mid-write keeps the old file.

Resuming (`main.py --load_path model.pt`) first checks that the file is a checkpoint of the same
architecture (and, for Part 2, of the same classes) and says which flags to pass when it is not;
only then are the states loaded into the model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel

import utils
from config import TrainConfig
from utils import UserError

CHECKPOINT_FORMAT = "ddpm-homework-checkpoint-v1"
# Fields that fix the network's shape: a checkpoint only loads into the same ones.
ARCHITECTURE_FIELDS = ("image_size", "time_steps", "unet_dim", "unet_dim_mults")


def make_checkpoint(*, step: int, config: TrainConfig, world_size: int, model: torch.nn.Module, ema: AveragedModel,
                    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, device: torch.device,
                    class_names: list[str] | None = None) -> dict:
    """The dictionary `write_checkpoint` saves: states, step, flags and the CPU (and CUDA) random state."""
    rng = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    checkpoint = {
        "format": CHECKPOINT_FORMAT, "step": step, "args": dataclasses.asdict(config), "world_size": world_size,
        "model": model.state_dict(), "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": rng,
    }
    if class_names is not None:
        checkpoint["class_names"] = list(class_names)
    return checkpoint


def write_checkpoint(checkpoint: dict, path: Path) -> None:
    """Save `checkpoint` to `path` atomically, retrying a failing disk (a dropped Drive mount) a few times.

    Raises:
        utils.WriteFailed: still failing after the retries (an old file at `path` stays whole).
    """
    def attempt() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        utils.atomic_torch_save(checkpoint, path)

    utils.write_with_retries(attempt, path)


def read_checkpoint(path: Path, config: TrainConfig, architecture_fields: tuple[str, ...],
                    class_names: list[str] | None) -> dict:
    """Load `path` and check that it fits a model built from `config` with these classes.

    Args:
        architecture_fields: the config fields that must be equal (the model's shape).
        class_names: Part 2's classes in label order, or None for an unconditional model.
    Raises:
        UserError: no file, not a checkpoint, another architecture or other classes; says what to pass.
    """
    if not path.is_file():
        raise UserError(f"--load_path {path} does not exist: pass a model.pt that training wrote")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (unpickling raises many types)
        raise UserError(f"--load_path {path} is not a checkpoint ({type(error).__name__}): "
                        "pass a model.pt that training wrote") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"--load_path {path} is not a checkpoint written by training: pass a model.pt from a --save_folder")
    saved = checkpoint["args"]
    defaults = TrainConfig()  # a field that an older checkpoint lacks had its default value
    different = [name for name in architecture_fields
                 if list(_as_list(saved.get(name, getattr(defaults, name)))) != list(_as_list(getattr(config, name)))]
    if different:
        theirs = " ".join(f"--{n} {' '.join(map(str, _as_list(saved.get(n, getattr(defaults, n)))))}" for n in different)
        raise UserError(f"--load_path {path} holds another architecture: it was trained with {theirs}; "
                        "pass those flags to load it")
    _check_classes(path, checkpoint.get("class_names"), class_names)
    return checkpoint


def load_states(checkpoint: dict, path: Path, *, model: torch.nn.Module, ema: AveragedModel,
                optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, learning_rate: float) -> None:
    """Load the weights, EMA, optimizer and scaler states of a checked checkpoint.

    The learning rate is the one given now (so a run that diverged can go on with a lower one), and
    the optimizer keeps this run's device options (fused, foreach), which the saved run's need not share.

    Raises:
        UserError: the states do not fit the model (`path` names the file in the message).
    """
    options = [{k: g[k] for k in ("fused", "foreach", "capturable") if k in g} for g in optimizer.param_groups]
    try:
        model.load_state_dict(checkpoint["model"])
        ema.load_state_dict(checkpoint["ema"])
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (KeyError, RuntimeError, ValueError) as error:
        raise UserError(f"--load_path {path} does not fit this model ({str(error)[:200]})") from None
    for group, own in zip(optimizer.param_groups, options):
        group.update(own, lr=learning_rate)
    if scaler.is_enabled() and checkpoint["scaler"]:
        scaler.load_state_dict(checkpoint["scaler"])


def restore_random_state(rng: dict, device: torch.device) -> None:
    """Put back the random state a checkpoint saved, so that a resumed run draws what it would have drawn."""
    torch.set_rng_state(rng["cpu"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)


def _check_classes(path: Path, saved: list[str] | None, ours: list[str] | None) -> None:
    """A checkpoint loads only into a model with the same classes, in the same label order."""
    if saved == ours:
        return
    if saved is None:
        raise UserError(f"--load_path {path} is an unconditional model: drop --class_cond to load it")
    if ours is None:
        raise UserError(f"--load_path {path} is class-conditional ({', '.join(saved)}): add --class_cond to load it")
    raise UserError(f"--load_path {path} was trained on the classes {', '.join(saved)}, but the data gives "
                    f"{', '.join(ours)}: pass the same --data_path (and --classes)")


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]
