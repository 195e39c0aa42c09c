"""What a training run records as it goes: `log.csv`, and Weights & Biases when asked.

    append_log_row   one row of log.csv: step, loss, steps per second, FID when measured, and
                     any columns a trainer adds (Part 3's energies)
    start_wandb      --wandb (or WANDB_PROJECT / WANDB_MODE=online in the environment): logs the
                     same values and the sample grids online, or offline without a login; never prompts

A logging service must never stop training: if wandb cannot start, the run goes on without it.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable
from pathlib import Path

from config import TrainConfig


def append_log_row(path: Path, step: int, loss: float, steps_per_second: float, fid: float | None,
                   extra: dict[str, float]) -> None:
    """Append one row to the CSV file `path`, writing the header first if the file is new."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["step", "loss", "steps_per_second", "fid", *extra])
        writer.writerow([step, f"{loss:.6f}", f"{steps_per_second:.3f}", "" if fid is None else f"{fid:.4f}",
                         *(f"{v:.6f}" for v in extra.values())])


def start_wandb(config: TrainConfig, folder: Path, log: Callable[[str], None]):
    """The started `wandb` module, or None when it is off or cannot start (with a warning).

    On when config.wandb is True, or when it is None and WANDB_PROJECT or WANDB_MODE=online is set.
    Without WANDB_MODE, it logs online with a login (WANDB_API_KEY or ~/.netrc) and offline without.
    """
    wanted = config.wandb
    if wanted is None:
        wanted = bool(os.environ.get("WANDB_PROJECT")) or os.environ.get("WANDB_MODE") == "online"
    if not wanted:
        return None
    mode = os.environ.get("WANDB_MODE")
    if mode is None:  # online needs a login; without one, log offline rather than ask for it
        netrc = Path.home() / ".netrc"
        logged_in = os.environ.get("WANDB_API_KEY") or (netrc.is_file() and "api.wandb.ai" in netrc.read_text())
        mode = "online" if logged_in else "offline"
        if not logged_in:
            log("wandb: no login found, logging offline; upload later with `wandb sync`")
    try:
        import wandb

        folder.mkdir(parents=True, exist_ok=True)
        wandb.init(project=os.environ.get("WANDB_PROJECT", "ddpm-homework"), config=vars(config), mode=mode,
                   dir=str(folder), resume="allow")
        return wandb
    except Exception as error:  # noqa: BLE001 (a logging service must never stop training)
        warnings.warn(f"--wandb: could not start wandb ({error}); training without it")
        return None
