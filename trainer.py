"""Training: Algorithm 1 in a loop, with EMA sampling, checkpoints, FID and multi-GPU.

`Trainer(TrainConfig(...))` builds a run; `Trainer.fit()` trains it and returns a `FitResult`.
main.py builds the config from its flags (the field names are the flag names). One step:

    batch  = next_batch()                    uint8 images -> random flip -> [-1, 1]
    loss   = compute_loss(batch)             Algorithm 1 (the student's GaussianDiffusion.forward)
    backward, clip the gradient norm, Adam step, update the EMA of the weights

Samples, grids and FID use the EMA weights. Every `save_and_sample_every` steps rank 0 writes
`model.pt` (atomically) and `sample-<step>.png`, and if asked `denoising-<step>.png/.gif` and FID
(also in `log.csv`). To train something else, subclass `Trainer` and override `make_model` (what
is trained) and `compute_loss` (one batch's loss).

From Python:

    from trainer import Trainer, TrainConfig
    trainer = Trainer(TrainConfig(batch_size=32, amp="off"))
    loss = trainer.train_step()   # one whole step: data, forward, backward, optimizer, EMA;
                                  # returns the loss tensor without waiting for the device
    images = trainer.sample(64)   # [64, 3, S, S] in [0, 1] from the EMA model, batched
    trainer.close()

Under torchrun each process trains on its shard of the data with batch_size / world_size
images, DistributedDataParallel averages the gradients, and only rank 0 writes files.

This file is the loop; what it calls lives beside it: config.py (TrainConfig), devices.py (device
and precision), training_data.py (images and batches), preflight.py (the check before training),
evaluation.py (samples and FID), grids.py (sample grids), checkpoints.py (save and resume) and
run_log.py (log.csv and wandb). None of them imports this file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import inspect
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

import checkpoints
import evaluation
import preflight
import run_log
import training_data
import utils
from config import TrainConfig
from devices import amp_dtype, pick_device
from diffusion import GaussianDiffusion
from grids import save_denoising, save_grid
from unet import Unet, count_parameters
from utils import UserError

# Rank 0 samples, writes files and computes FID while the other ranks wait in their next
# collective; NCCL's default of 10 minutes would end a run whose FID takes longer.
DISTRIBUTED_TIMEOUT = datetime.timedelta(hours=2)
DEMO_MESSAGE = ("No --data_path given: training on the built-in demo set ({n} procedural {s}x{s} images of "
                "coloured shapes, no download). For the homework's data see README.md, section \"Homework data\".")


class Status(enum.Enum):
    DONE = "done"  # reached train_steps
    NONFINITE = "nonfinite"  # the loss or the weights became NaN or infinite; nothing saved after that
    INTERRUPTED = "interrupted"  # Ctrl-C; a checkpoint was saved if any step had been trained
    WRITE_FAILED = "write_failed"  # a file could not be written even after retries; the last checkpoint is kept


@dataclasses.dataclass
class FitResult:
    """How `Trainer.fit` ended."""

    status: Status
    step: int  # optimizer steps done
    loss: float | None = None  # NONFINITE: the loss that was not finite
    checkpoint: Path | None = None  # the checkpoint to resume from, if there is one
    message: str | None = None  # WRITE_FAILED: what could not be written, and why


class Trainer:
    """Everything one training run needs, built from a TrainConfig.

    Attributes (the useful ones):
        model: the module being trained (a GaussianDiffusion); wrapped_model: the same module inside
        DistributedDataParallel and/or torch.compile, which the training step calls; ema: the
        AveragedModel of `model` (ema.module makes the samples).
        optimizer, scaler, device, step (optimizer steps done), rank, world_size, is_main.
    """

    TEST_FILE = "test_diffusion.py"  # the tests of the functions this trainer runs, named in its errors

    architecture_fields = ("model", *checkpoints.ARCHITECTURE_FIELDS)
    ema_decay = 0.995  # --ema_decay's default for this model: an average over about the last 200 steps

    def __init__(self, config: TrainConfig):
        self.config = config
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.is_main = self.rank == 0
        self.device = pick_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.step = 0
        self.saved_step: int | None = None  # the step of the last checkpoint this run wrote
        self.save_folder = Path(config.save_folder)
        self.checkpoint_path = self.save_folder / "model.pt"
        self._wandb = None
        if config.data_path is None:
            self.log(DEMO_MESSAGE.format(n=config.demo_images, s=config.image_size))

        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # before NCCL starts, so each rank talks from its own GPU
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self._setup_distributed()
        torch.manual_seed(config.seed + self.rank)
        # Cheap checks first, then FID: missing Inception weights must fail now, not after hours of training.
        image_folder = self._image_folder()
        self.fid_evaluator: evaluation.FidEvaluator | None = None
        if config.fid and self.is_main:
            self.fid_evaluator = evaluation.FidEvaluator(config.fid_weights, self.device,
                                                         self.save_folder / "fid_real_statistics.pt")

        self.labels: torch.Tensor | None = None  # [N] long beside the images, for a class-conditional model
        self.class_names: list[str] | None = None  # label i = class_names[i]
        images = self._load_images(image_folder)
        if self.fid_evaluator is not None:
            self.fid_evaluator.real_images = images
        labels = None if self.labels is None else self.labels[self.rank :: self.world_size]
        self.batches = self._make_batches(images[self.rank :: self.world_size], labels)

        self.model = self.make_model().to(self.device)
        # NHWC: faster convolutions on CPUs (oneDNN); on CUDA unmeasured for this model, so off by default.
        self.channels_last = self.device.type == "cpu" if config.channels_last is None else config.channels_last
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # AveragedModel holds the EMA copy (ema.module) and its counter, which stays on the CPU; the
        # update is ours (update_ema), since update_parameters copies that counter to the device every call.
        self.ema = AveragedModel(self.model, use_buffers=True)
        self.optimizer = self._make_optimizer()
        self.amp_dtype = amp_dtype(config.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        if config.load_path:
            self.load_checkpoint(config.load_path)

        self.wrapped_model = self.model
        if self.world_size > 1:
            # Schedule buffers are constants: no need to broadcast them every step.
            no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                              inspect.signature(DistributedDataParallel).parameters else {"broadcast_buffers": False})
            self.wrapped_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None, **no_buffer_sync)
        self._eager_wrapped_model = self.wrapped_model
        self._compile_pending = config.compile
        if config.compile:
            self.wrapped_model = torch.compile(self.wrapped_model)

    # ------------------------------------------------------------------ setup

    def log(self, message: str) -> None:
        """Print on rank 0 only, without breaking a progress bar."""
        if self.is_main:
            tqdm.write(message, file=sys.stdout)

    def _setup_distributed(self) -> None:
        self._owns_process_group = False
        if self.world_size > 1 and not dist.is_initialized():
            if self.device.type not in ("cuda", "cpu"):
                raise UserError(f"--device {self.device.type}: multi-process training runs on CUDA or the CPU only")
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo", timeout=DISTRIBUTED_TIMEOUT)
            self._owns_process_group = True
        if self.config.batch_size % self.world_size:
            raise UserError(f"--batch_size {self.config.batch_size} counts all {self.world_size} processes together "
                            f"and must be divisible by {self.world_size}")

    def _checked_data_path(self) -> Path:
        return training_data.checked_data_path(self.config.data_path)

    def _image_folder(self) -> Path | None:
        """The folder of training images (None: the demo set), checked before any slow start-up work."""
        if self.config.data_path is None:
            return None
        return training_data.class_folder(self._checked_data_path(), self.config.data_class)

    def _load_images(self, folder: Path | None) -> torch.Tensor:
        config = self.config
        if folder is None:
            return training_data.make_demo_dataset(config.demo_images, config.image_size, seed=0)
        try:
            images = training_data.load_image_folder(folder, config.image_size)
        except UserError as error:
            raise UserError(f"--data_path: {error}") from None
        self.log(f"data: {len(images)} images from {folder}/, {config.image_size}x{config.image_size}")
        if len(images) < self.world_size:
            raise UserError(f"--data_path: {folder} has {len(images)} images, fewer than the {self.world_size} processes")
        return images

    def make_model(self) -> torch.nn.Module:
        """What is trained (`model`): the EMA copy's `sample(n)` makes the images; `compute_loss` calls it."""
        c = self.config
        unet = Unet(dim=c.unet_dim, dim_mults=tuple(c.unet_dim_mults), channels=3)
        return GaussianDiffusion(unet, image_size=c.image_size, channels=3, timesteps=c.time_steps)

    def _make_batches(self, shard: torch.Tensor, labels: torch.Tensor | None = None):
        batch_size = self.config.batch_size // self.world_size
        if self.config.data_on_device:
            try:
                return training_data.DeviceBatches(shard.to(self.device), batch_size,
                                                   labels=None if labels is None else labels.to(self.device))
            except torch.cuda.OutOfMemoryError:
                warnings.warn("--data_on_device: the data set does not fit in device memory; "
                              "loading batches with a DataLoader instead (--no-data_on_device)")
        return training_data.LoaderBatches(shard, batch_size, self.config.dataloader_workers, self.device, labels=labels)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        lr, fused = self.config.learning_rate, self.config.fused_optimizer
        if fused is None:  # auto: the fused kernel is the fastest Adam on CUDA
            fused = self.device.type == "cuda"
        if fused:
            try:
                return torch.optim.Adam(self.model.parameters(), lr=lr, fused=True)
            except (RuntimeError, TypeError, ValueError) as error:
                warnings.warn(f"--fused_optimizer: fused Adam is not available on {self.device.type} ({error}); "
                              "using the standard Adam")
        return torch.optim.Adam(self.model.parameters(), lr=lr)

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- decay * ema + (1 - decay) * model, the decay warmed up over the first steps.

        `self.step` is a Python int and the counter a CPU tensor, so the update only queues device
        work: the host never waits for the device.
        """
        ema_params, model_params = list(self.ema.module.parameters()), list(self.model.parameters())
        if self.step == 0:
            torch._foreach_copy_(ema_params, model_params)
        else:
            chosen = self.config.ema_decay
            decay = ema_warmup_decay(self.ema_decay if chosen is None else chosen, self.step)
            torch._foreach_lerp_(ema_params, model_params, 1.0 - decay)
        self.ema.n_averaged += 1

    # ------------------------------------------------------------------ the step

    def next_batch(self) -> torch.Tensor:
        """[B, 3, S, S] float in [-1, 1] on the device: this process's next augmented batch."""
        batch = training_data.augment(next(self.batches))
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def _autocast(self):
        """Mixed precision where --amp chose it: matmuls and convolutions in fp16/bf16, the rest float32."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def compute_loss(self, batch: torch.Tensor) -> torch.Tensor:
        """One batch's loss, a 0-dim tensor: for the DDPM, Algorithm 1 on x_0 = batch [B, 3, S, S].

        Calls `wrapped_model`, not `model`, so that DDP averages the gradients and torch.compile applies.
        """
        return self.wrapped_model(batch)

    def _forward_backward(self, x_0: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            loss = self.compute_loss(x_0)
        self.scaler.scale(loss).backward()
        return loss

    def train_step(self) -> torch.Tensor:
        """One optimizer step on the next batch. Returns the loss (a 0-dim device tensor, no sync)."""
        x_0 = self.next_batch()
        self.optimizer.zero_grad(set_to_none=True)
        if self._compile_pending:  # torch.compile fails (if it does) at its first call
            self._compile_pending = False
            try:
                loss = self._forward_backward(x_0)
            except Exception as error:  # noqa: BLE001 (compiler errors come in many types)
                warnings.warn(f"--compile: torch.compile failed ({type(error).__name__}: {str(error)[:200]}); "
                              "training without it (--no-compile)")
                self.wrapped_model = self._eager_wrapped_model
                self.optimizer.zero_grad(set_to_none=True)
                loss = self._forward_backward(x_0)
        else:
            loss = self._forward_backward(x_0)
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)  # fp16: skips the step if a gradient overflowed
        self.scaler.update()
        self.update_ema()
        self.step += 1
        return loss.detach()

    def synchronize(self) -> None:
        """Wait for all queued device work (for timing)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    # ------------------------------------------------------------------ sampling

    @torch.inference_mode()
    def sample(self, num_images: int) -> torch.Tensor:
        """[num_images, 3, S, S] in [0, 1]: Algorithm 2 (or --sampler ddim) with the EMA weights, in batches."""
        model, c = self.ema.module, self.config
        with self._autocast():
            return evaluation.sample_in_batches(
                lambda n: evaluation.diffusion_samples(model, n, c.sampler, c.sampling_steps, c.ddim_eta),
                num_images, c.sample_batch_size)

    @torch.inference_mode()
    def sample_trajectory(self, num_images: int) -> list[torch.Tensor]:
        """The reverse process x_T, ..., x_0 of a few samples: steps + 1 tensors [N, 3, S, S] in [0, 1]."""
        c = self.config
        with self._autocast():
            return evaluation.denoising_trajectory(self.ema.module, num_images, c.image_size, self.device, c.sampler,
                                                   c.sampling_steps, c.ddim_eta)

    def evaluate_fid(self) -> float:
        """FID of fid_samples EMA samples against the real images (their statistics cached on disk)."""
        return self.fid_evaluator(self.sample, self.config.fid_samples, self.config.sample_batch_size)

    def evaluate(self) -> float | None:
        """No training: write the sample grid (and with the config the denoising strip and FID) of
        the weights as they are, e.g. just loaded from a checkpoint. Returns FID if computed."""
        self.log(f"evaluating the model at step {self.step} (no training)")
        return self._save_point(save_checkpoint=False)

    # ------------------------------------------------------------------ the check before training

    def check_model(self) -> None:
        """Compute the loss of 2 training images (with its backward) and sample 2 images, on the device.

        A tensor created on the wrong device or an output of the wrong shape then stops the run
        within seconds, as one line naming the function, instead of at the first step or at the
        first sample grid an hour later. The random state, the gradients and the weights are left
        as they were (the data stream moves on by one batch).

        Raises:
            UserError: which function failed on which device, with the error and its line.
        """
        size = self.config.image_size
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            batch = preflight.first_rows(self.next_batch(), 2)  # a tensor, or a tuple such as (images, labels)
            wrapped, self.wrapped_model = self.wrapped_model, self.model  # no DDP collective, no compiling here
            try:
                preflight.check_loss(lambda: self._loss_in_autocast(batch), (2, 3, size, size), self.device,
                                     self.TEST_FILE)
            finally:
                self.wrapped_model = wrapped
                self.optimizer.zero_grad(set_to_none=True)
            preflight.check_samples(self.sample, (3, size, size), self.device, self.TEST_FILE)

    def _loss_in_autocast(self, batch) -> torch.Tensor:
        with self._autocast():
            return self.compute_loss(batch)

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path:
        """Write model, EMA, optimizer, scaler, step, flags and RNG states to `model.pt`, atomically.

        Raises:
            utils.WriteFailed: still failing after a few retries (the previous checkpoint stays whole).
        """
        # Buffers are not averaged: the schedule's are constants, and the energy model's replay buffer
        # (tens of MB) is copied here rather than at every step, so the saved EMA holds the current one.
        with torch.no_grad():
            torch._foreach_copy_(list(self.ema.module.buffers()), list(self.model.buffers()))
        checkpoint = checkpoints.make_checkpoint(
            step=self.step, config=self.config, world_size=self.world_size, model=self.model, ema=self.ema,
            optimizer=self.optimizer, scaler=self.scaler, device=self.device, class_names=self.class_names)
        checkpoints.write_checkpoint(checkpoint, self.checkpoint_path)
        self.saved_step = self.step
        return self.checkpoint_path

    def load_checkpoint(self, path: str | Path) -> None:
        """Resume from a checkpoint of the same architecture: weights, EMA, optimizer, scaler, step, random state.

        The learning rate is the one given now (so a run that diverged can go on with a lower one).
        """
        path = Path(path)
        checkpoint = checkpoints.read_checkpoint(path, self.config, self.architecture_fields, self.class_names)
        checkpoints.load_states(checkpoint, path, model=self.model, ema=self.ema, optimizer=self.optimizer,
                                scaler=self.scaler, learning_rate=self.config.learning_rate)
        self.step = checkpoint["step"]
        if self.world_size == 1:
            checkpoints.restore_random_state(checkpoint["rng"], self.device)
        else:  # one saved state cannot serve several ranks: give each its own stream
            torch.manual_seed(self.config.seed + self.rank + 1000 * self.step)
        self.log(f"resuming from step {self.step} ({path})")

    def _write(self, path: Path, write: Callable[[], None]) -> None:
        """Write one file into save_folder; a failing disk (a dropped Drive mount) is retried a few times.

        Raises:
            utils.WriteFailed: still failing after the retries (an old file at `path` stays whole).
        """
        def attempt() -> None:
            self.save_folder.mkdir(parents=True, exist_ok=True)
            write()

        utils.write_with_retries(attempt, path)

    # ------------------------------------------------------------------ the loop

    def fit(self) -> FitResult:
        """Train to train_steps, saving and sampling on the way.

        Stops early when the loss or the weights become NaN or infinite (nothing saved after
        that), or on Ctrl-C (a checkpoint is saved first, on rank 0).
        """
        config = self.config
        self.log(self.describe())
        if self.is_main:
            self._wandb = run_log.start_wandb(self.config, self.save_folder, self.log)
        if self.step >= config.train_steps:
            self.log(f"step {self.step} >= --train_steps {config.train_steps}: nothing to train, writing samples only")
            self._save_point(save_checkpoint=False)
            return FitResult(Status.DONE, self.step)
        loss_sum, count = torch.zeros((), device=self.device), 0
        last_read = time.perf_counter()
        bar = tqdm(total=config.train_steps, initial=self.step, unit="step", disable=not self.is_main, dynamic_ncols=True)
        try:
            while self.step < config.train_steps:
                loss_sum += self.train_step().float()
                count += 1
                bar.update(1)
                save_now = self.step % config.save_and_sample_every == 0 or self.step == config.train_steps
                if count < config.log_every and not save_now:
                    continue
                loss = self._mean_over_ranks(loss_sum, count)  # the only host sync: every log_every steps
                rate = count / (time.perf_counter() - last_read)
                loss_sum.zero_()
                count = 0
                if not math.isfinite(loss) or (save_now and not self._weights_finite()):
                    bar.close()
                    return self._nonfinite(loss)
                bar.set_postfix(loss=f"{loss:.4f}")
                if self.step == config.train_steps:
                    bar.close()  # before the last log lines, so that the final bar prints once
                fid = self._save_point() if save_now else None
                self._record(loss=loss, steps_per_second=rate, fid=fid)
                last_read = time.perf_counter()
        except KeyboardInterrupt:
            bar.close()
            return self._interrupted(loss_sum, count)
        except utils.WriteFailed as error:
            bar.close()
            return self._write_failed(error)
        except UserError:
            bar.close()
            raise
        bar.close()
        return FitResult(Status.DONE, self.step, checkpoint=self._checkpoint_if_written())

    def describe(self) -> str:
        c = self.config
        amp = {None: "off", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.amp_dtype]
        fused = self.optimizer.param_groups[0].get("fused")
        on_device = isinstance(self.batches, training_data.DeviceBatches)
        when = ("at the end" if c.save_and_sample_every >= c.train_steps
                else f"every {c.save_and_sample_every} steps and at the end")
        return (f"device {self.device} x {self.world_size} process(es) | amp {amp} | channels_last {_on(self.channels_last)} | "
                f"compile {_on(c.compile)} | data on device {_on(on_device)} | "
                f"fused Adam {_on(fused)}\n{self.describe_model()} | batch {c.batch_size} | {c.train_steps} steps | "
                f"{when}: checkpoint and samples in {self.save_folder}/")

    def describe_model(self) -> str:
        """One line on what is trained (a subclass's seam)."""
        c = self.config
        return (f"model {count_parameters(self.model) / 1e6:.2f}M parameters (--unet_dim {c.unet_dim}, "
                f"--unet_dim_mults {' '.join(map(str, c.unet_dim_mults))}), T = {c.time_steps}")

    def _mean_over_ranks(self, loss_sum: torch.Tensor, count: int) -> float:
        if self.world_size > 1:
            dist.all_reduce(loss_sum)  # every rank sees the same value, so all stop together on NaN
            count *= self.world_size
        return loss_sum.item() / count

    def _weights_finite(self) -> bool:
        return bool(torch.stack([p.isfinite().all() for p in self.model.parameters()]).all())

    def save_and_sample(self, save_checkpoint: bool = True) -> list[Path]:
        """Rank 0: write the checkpoint, the sample grid and (visualize) the denoising strip and GIF.

        Returns the paths written (none on other ranks).
        """
        if not self.is_main:
            return []
        written = [self.save_checkpoint()] if save_checkpoint else []
        grid = self.save_folder / f"sample-{self.step}.png"
        images = self.sample(self.config.num_samples)
        self._write(grid, lambda: save_grid(images, grid))
        written.append(grid)
        if self.config.visualize:
            strip, gif = self.save_folder / f"denoising-{self.step}.png", self.save_folder / f"denoising-{self.step}.gif"
            frames = self.sample_trajectory(self.config.visualize_samples)
            self._write(strip, lambda: save_denoising(frames, strip, gif))
            written += [strip, gif]
        if self._wandb is not None:
            self._wandb.log({"samples": self._wandb.Image(str(grid))}, step=self.step)
        return written

    def _save_point(self, save_checkpoint: bool = True) -> float | None:
        """Every save_and_sample_every steps: files, then FID (if asked), then one log line. Returns FID."""
        if not self.is_main:
            return None
        written = self.save_and_sample(save_checkpoint)
        fid = self.evaluate_fid() if self.config.fid else None
        self.log(f"step {self.step}: wrote {', '.join(map(str, written))}" + (f" | FID {fid:.2f}" if fid is not None else ""))
        if self._wandb is not None and fid is not None:
            self._wandb.log({"fid": fid}, step=self.step)
        return fid

    def _record(self, loss: float, steps_per_second: float, fid: float | None) -> None:
        """One row of log.csv (and wandb): step, loss, steps/s, FID when measured."""
        if not self.is_main:
            return
        path, extra = self.save_folder / "log.csv", self.extra_log_values()
        self._write(path, lambda: run_log.append_log_row(path, self.step, loss, steps_per_second, fid, extra))
        if self._wandb is not None:
            self._wandb.log({"loss": loss, "steps_per_second": steps_per_second, **extra}, step=self.step)

    def extra_log_values(self) -> dict[str, float]:
        """More columns for log.csv, measured at each log line (a subclass's seam; none here)."""
        return {}

    def _checkpoint_if_written(self) -> Path | None:
        return self.checkpoint_path if self.checkpoint_path.exists() else None

    def _nonfinite(self, loss: float) -> FitResult:
        return FitResult(Status.NONFINITE, self.step, loss=loss, checkpoint=self._checkpoint_if_written())

    def _interrupted(self, loss_sum: torch.Tensor, count: int) -> FitResult:
        if self.world_size == 1 and ((count and not math.isfinite(loss_sum.item())) or not self._weights_finite()):
            return self._nonfinite(loss_sum.item() / max(count, 1))
        try:
            saved = self.save_checkpoint() if self.is_main and self.step > 0 else None
        except utils.WriteFailed as error:
            return self._write_failed(error)
        return FitResult(Status.INTERRUPTED, self.step, checkpoint=saved)

    def _write_failed(self, error: utils.WriteFailed) -> FitResult:
        if self.saved_step is not None:
            kept, checkpoint = f"the checkpoint of step {self.saved_step} is kept", self.checkpoint_path
        else:
            try:
                checkpoint = self.checkpoint_path if self.checkpoint_path.is_file() else None
            except OSError:  # the folder itself is unreachable
                checkpoint = None
            kept = "the checkpoint written before is kept" if checkpoint else "no checkpoint had been written yet"
        return FitResult(Status.WRITE_FAILED, self.step, checkpoint=checkpoint, message=f"{error}; {kept}")

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        if self._owns_process_group and dist.is_initialized():
            dist.destroy_process_group()


def ema_warmup_decay(decay: float, updates: int) -> float:
    """The EMA's decay after `updates` updates: min(decay, (1 + n) / (10 + n)).

    The warm-up stops a short run's average from remembering mostly the random initial weights.
    """
    return min(decay, (1 + updates) / (10 + updates))


def _on(flag) -> str:
    return "on" if flag else "off"
