"""Training: Algorithm 1 in a loop, with EMA sampling, checkpoints, FID and multi-GPU.

main.py parses the flags and hands them to `Trainer`; `Trainer.fit` runs the loop. One step:

    batch  = next_batch()                    uint8 images -> random flip -> [-1, 1]
    loss   = diffusion(batch)                Algorithm 1 (the student's GaussianDiffusion.forward)
    backward, clip the gradient norm, Adam step, update the EMA of the weights

Samples, grids and FID use the EMA weights. Every --save_and_sample_every steps rank 0 writes
`model.pt` (atomically) and `sample-<step>.png`, and with the flags `denoising-<step>.png/.gif`
and FID (also in `log.csv`).

Using it from Python (the benchmark in bench/ does this to time exactly what main.py runs):

    from trainer import Trainer
    trainer = Trainer.from_flags(["--batch_size", "32", "--amp", "off"])  # main.py's flags
    loss = trainer.train_step()   # one whole step: data, forward, backward, optimizer, EMA;
                                  # returns the loss tensor without waiting for the device
    trainer.synchronize()         # wait for the device (for timing)
    batch = trainer.next_batch()  # the data pipeline alone: [B, 3, S, S] float on the device
    images = trainer.sample(64)   # [64, 3, S, S] in [0, 1] from the EMA model, batched
    trainer.close()

Speed: nothing in `train_step` reads a value back to the host (with the defaults; fp16 with
--no-fused_optimizer does, inside GradScaler.step), so the CPU can queue the next steps while
the GPU works; `fit` reads the loss every --log_every steps only (NaN checks included). Multi-GPU: under torchrun each process trains on its shard of the data
with batch_size / world_size images, DistributedDataParallel averages the gradients, and
only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import math
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

import utils
from diffusion import GaussianDiffusion
from unet import Unet, count_parameters
from utils import UserError

CHECKPOINT_FORMAT = "ddpm-homework-checkpoint-v1"
# Flags that fix the network's shape: a checkpoint only loads into the same ones.
ARCHITECTURE_FLAGS = ("image_size", "time_steps", "unet_dim", "unet_dim_mults")
DEMO_MESSAGE = ("No --data_path given: training on the built-in demo set ({n} procedural {s}x{s} images of "
                "coloured shapes, no download). For the homework's data see README.md, section \"Homework data\".")


class Trainer:
    """Everything one training run needs, built from main.py's parsed flags.

    Args:
        args: main.parse_args(...) output.
        argv: the command-line arguments, to print the command that resumes after Ctrl-C.
    Attributes (the useful ones):
        diffusion: the GaussianDiffusion being trained; ema: its AveragedModel (ema.module samples).
        optimizer, scaler, device, step (optimizer steps done), rank, world_size, is_main.
    """

    def __init__(self, args, argv: list[str] | None = None):
        self.args, self.argv = args, argv
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.is_main = self.rank == 0
        self.device = utils.pick_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.step = 0
        self.save_folder = Path(args.save_folder)
        self.checkpoint_path = self.save_folder / "model.pt"
        self._wandb = None
        if args.data_path is None:
            self.log(DEMO_MESSAGE.format(n=args.demo_images, s=args.image_size))

        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # before NCCL starts, so each rank talks from its own GPU
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self._setup_distributed()
        torch.manual_seed(args.seed + self.rank)
        # FID first: missing Inception weights must fail now, not after hours of training.
        self.fid_metric = None
        if args.fid and self.is_main:
            metric_device = "cpu" if self.device.type == "mps" else self.device  # MPS has no float64
            self.fid_metric = utils.make_fid_metric(args.fid_weights).to(metric_device)

        images = self._load_images()
        self.real_images = images if args.fid and self.is_main else None
        self.batches = self._make_batches(images[self.rank :: self.world_size])

        unet = Unet(dim=args.unet_dim, dim_mults=tuple(args.unet_dim_mults), channels=3)
        self.diffusion = GaussianDiffusion(unet, image_size=args.image_size, channels=3, timesteps=args.time_steps)
        self.diffusion.to(self.device)
        if args.channels_last:
            self.diffusion.to(memory_format=torch.channels_last)
        # AveragedModel holds the EMA copy (ema.module) and its counter, which stays on the CPU; the
        # update is ours (update_ema), since update_parameters copies that counter to the device every call.
        self.ema = AveragedModel(self.diffusion, use_buffers=True)
        self.optimizer = self._make_optimizer()
        self.amp_dtype = self._resolve_amp()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        if args.load_path:
            self.load_checkpoint(args.load_path)

        self.train_model = self.diffusion
        if self.world_size > 1:
            # Schedule buffers are constants: no need to broadcast them every step.
            no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                              inspect.signature(DistributedDataParallel).parameters else {"broadcast_buffers": False})
            self.train_model = DistributedDataParallel(
                self.diffusion, device_ids=[self.device.index] if self.device.type == "cuda" else None, **no_buffer_sync)
        self._eager_model = self.train_model
        self._compile_pending = args.compile
        if args.compile:
            self.train_model = torch.compile(self.train_model)

    @classmethod
    def from_flags(cls, argv: list[str]) -> "Trainer":
        """Build the setup main.py would build for these command-line flags (no files written)."""
        import main

        return cls(main.parse_args(argv), argv=argv)

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
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
            self._owns_process_group = True
        if self.args.batch_size % self.world_size:
            raise UserError(f"--batch_size {self.args.batch_size} counts all {self.world_size} processes together "
                            f"and must be divisible by {self.world_size}")

    def _load_images(self) -> torch.Tensor:
        args = self.args
        if args.data_path is None:
            return utils.make_demo_dataset(args.demo_images, args.image_size, seed=0)
        data_path = Path(args.data_path)
        if not data_path.is_dir():
            raise UserError(f"--data_path {data_path} does not exist: pass the folder that holds the class "
                            f"folder {args.data_class}/ (see README.md, \"Homework data\"), or omit it for the demo set")
        folder = data_path / args.data_class
        if not folder.is_dir():
            classes = sorted(p.name for p in data_path.iterdir() if p.is_dir() and not p.name.startswith("."))
            found = f"it has {', '.join(classes[:8])}" if classes else "it has no subfolders"
            raise UserError(f"--data_class {args.data_class}: there is no folder {folder} ({found}); images are "
                            "read from data_path/data_class/")
        try:
            images = utils.load_image_folder(folder, args.image_size)
        except UserError as error:
            raise UserError(f"--data_path: {error}") from None
        self.log(f"data: {len(images)} images from {folder}/, {args.image_size}x{args.image_size}")
        if len(images) < self.world_size:
            raise UserError(f"--data_path: {folder} has {len(images)} images, fewer than the {self.world_size} processes")
        return images

    def _make_batches(self, shard: torch.Tensor):
        batch_size = self.args.batch_size // self.world_size
        if self.args.data_on_device:
            try:
                return utils.DeviceBatches(shard.to(self.device), batch_size)
            except torch.cuda.OutOfMemoryError:
                warnings.warn("--data_on_device: the data set does not fit in device memory; "
                              "loading batches with a DataLoader instead (--no-data_on_device)")
        return utils.LoaderBatches(shard, batch_size, self.args.dataloader_workers, self.device)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        lr, fused = self.args.learning_rate, self.args.fused_optimizer
        if fused is None:  # auto: the fused kernel is the fastest Adam on CUDA
            fused = self.device.type == "cuda"
        if fused:
            try:
                return torch.optim.Adam(self.diffusion.parameters(), lr=lr, fused=True)
            except (RuntimeError, TypeError, ValueError) as error:
                warnings.warn(f"--fused_optimizer: fused Adam is not available on {self.device.type} ({error}); "
                              "using the standard Adam")
        return torch.optim.Adam(self.diffusion.parameters(), lr=lr)

    def _resolve_amp(self) -> torch.dtype | None:
        """--amp: bf16 where the GPU has it (Ampere and newer), fp16 + GradScaler on older GPUs (T4)."""
        choice = self.args.amp
        if self.device.type != "cuda":
            if choice in ("fp16", "bf16"):
                warnings.warn(f"--amp {choice}: mixed precision is used on CUDA only; training in float32 on "
                              f"{self.device.type}")
            return None
        has_bf16 = torch.cuda.get_device_capability(self.device)[0] >= 8
        if choice == "bf16" and not has_bf16:
            warnings.warn("--amp bf16: this GPU has no native bfloat16; using fp16 with a gradient scaler")
            return torch.float16
        if choice == "auto":
            return torch.bfloat16 if has_bf16 else torch.float16
        return {"fp16": torch.float16, "bf16": torch.bfloat16, "off": None}[choice]

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- decay * ema + (1 - decay) * model, with a warm-up on the decay; the first update copies.

        The warm-up min(decay, (1 + step) / (10 + step)) stops a short run's average from
        remembering mostly the random initial weights. `step` is a Python int and the counter a
        CPU tensor, so the update only queues device work: the host never waits for the device.
        """
        ema_params, model_params = list(self.ema.module.parameters()), list(self.diffusion.parameters())
        if self.step == 0:
            torch._foreach_copy_(ema_params, model_params)
        else:
            decay = min(self.args.ema_decay, (1 + self.step) / (10 + self.step))
            torch._foreach_lerp_(ema_params, model_params, 1.0 - decay)
        self.ema.n_averaged += 1

    # ------------------------------------------------------------------ the step

    def next_batch(self) -> torch.Tensor:
        """[B, 3, S, S] float in [-1, 1] on the device: this process's next augmented batch."""
        batch = utils.augment(next(self.batches))
        if self.args.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def _autocast(self):
        """Mixed precision where --amp chose it: matmuls and convolutions in fp16/bf16, the rest float32."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _forward_backward(self, x_0: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            loss = self.train_model(x_0)
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
                self.train_model = self._eager_model
                self.optimizer.zero_grad(set_to_none=True)
                loss = self._forward_backward(x_0)
        else:
            loss = self._forward_backward(x_0)
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(self.diffusion.parameters(), self.args.grad_clip)
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
        """[num_images, 3, S, S] in [0, 1]: Algorithm 2 with the EMA weights, --sample_batch_size at a time."""
        model, size = self.ema.module, self.args.sample_batch_size
        with self._autocast():
            chunks = [model.sample(min(size, num_images - i)).float() for i in range(0, num_images, size)]
        return torch.cat(chunks)

    @torch.inference_mode()
    def sample_trajectory(self, num_images: int) -> list[torch.Tensor]:
        """The reverse process x_T, ..., x_0 of a few samples: T + 1 tensors [N, 3, S, S] in [0, 1]."""
        model = self.ema.module
        shape = (num_images, 3, self.args.image_size, self.args.image_size)
        x = model.noise_like(shape, self.device)
        frames = [x]
        with self._autocast():
            for t_index in reversed(range(model.num_timesteps)):
                t = torch.full((num_images,), t_index, device=self.device, dtype=torch.long)
                x = model.p_sample(x, t, t_index).float()
                frames.append(x)
        return [((frame.clamp(-1, 1) + 1) / 2).cpu() for frame in frames]

    def evaluate_fid(self) -> float:
        """FID of --fid_samples EMA samples against the real images (their statistics cached on disk)."""
        utils.load_real_statistics(self.fid_metric, self.real_images, self.save_folder / "fid_real_statistics.pt")
        n, size = self.args.fid_samples, self.args.sample_batch_size
        batches = (self.sample(min(size, n - i)) for i in range(0, n, size))
        return utils.compute_fid(self.fid_metric, tqdm(batches, total=math.ceil(n / size), desc="FID: samples",
                                                        unit="batch", leave=False))

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path:
        """Write model, EMA, optimizer, scaler, step, flags and RNG states to `model.pt`, atomically."""
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        checkpoint = {
            "format": CHECKPOINT_FORMAT, "step": self.step, "args": vars(self.args), "world_size": self.world_size,
            "model": self.diffusion.state_dict(), "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(), "rng": rng,
        }
        self.save_folder.mkdir(parents=True, exist_ok=True)
        utils.atomic_torch_save(checkpoint, self.checkpoint_path)
        return self.checkpoint_path

    def load_checkpoint(self, path: str | Path) -> None:
        """Resume from a checkpoint of the same architecture: weights, EMA, optimizer, scaler, step.

        The learning rate is the one given now (so a run that diverged can go on with a lower one).
        """
        path = Path(path)
        if not path.is_file():
            raise UserError(f"--load_path {path} does not exist: pass a model.pt that main.py wrote")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 (unpickling raises many types)
            raise UserError(f"--load_path {path} is not a checkpoint ({type(error).__name__}): "
                            "pass a model.pt that main.py wrote") from None
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"--load_path {path} is not a checkpoint written by main.py: pass a model.pt that main.py wrote")
        saved = checkpoint["args"]
        different = [name for name in ARCHITECTURE_FLAGS if list(_as_list(saved[name])) != list(_as_list(getattr(self.args, name)))]
        if different:
            theirs = " ".join(f"--{n} {' '.join(map(str, _as_list(saved[n])))}" for n in different)
            raise UserError(f"--load_path {path} holds another architecture: it was trained with {theirs}; "
                            "pass those flags to load it")
        options = [{k: g[k] for k in ("fused", "foreach", "capturable") if k in g} for g in self.optimizer.param_groups]
        try:
            self.diffusion.load_state_dict(checkpoint["model"])
            self.ema.load_state_dict(checkpoint["ema"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise UserError(f"--load_path {path} does not fit this model ({str(error)[:200]})") from None
        for group, own in zip(self.optimizer.param_groups, options):
            group.update(own, lr=self.args.learning_rate)  # the saved run's device options do not apply here
        if self.scaler.is_enabled() and checkpoint["scaler"]:
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.step = checkpoint["step"]
        if self.world_size == 1:
            torch.set_rng_state(checkpoint["rng"]["cpu"])
            if self.device.type == "cuda" and "cuda" in checkpoint["rng"]:
                torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], self.device)
        else:  # one saved state cannot serve several ranks: give each its own stream
            torch.manual_seed(self.args.seed + self.rank + 1000 * self.step)
        self.log(f"resuming from step {self.step} ({path})")

    def resume_command(self) -> str:
        """The command that continues this run from its checkpoint."""
        argv = list(self.argv if self.argv is not None else sys.argv[1:])
        for i, arg in enumerate(argv):  # drop an old --load_path and its value
            if arg == "--load_path":
                del argv[i : i + 2]
                break
            if arg.startswith("--load_path="):
                del argv[i]
                break
        launcher = ["python"] if self.world_size == 1 else ["torchrun", f"--nproc_per_node={self.world_size}"]
        return shlex.join([*launcher, "main.py", *argv, "--load_path", str(self.checkpoint_path)])

    # ------------------------------------------------------------------ the loop

    def fit(self) -> int:
        """Train to --train_steps, saving and sampling on the way. Returns the exit code.

        0 when done; 1 when the loss became NaN or infinite (nothing saved after that); 130
        after Ctrl-C, which saves a checkpoint first and prints the command that resumes.
        """
        args = self.args
        self.log(self.describe())
        self._start_wandb()
        if self.step >= args.train_steps:
            self.log(f"step {self.step} >= --train_steps {args.train_steps}: nothing to train, writing samples only")
            self.save_and_sample(save_checkpoint=False)
            return 0
        loss_sum, count = torch.zeros((), device=self.device), 0
        last_read = time.perf_counter()
        bar = tqdm(total=args.train_steps, initial=self.step, unit="step", disable=not self.is_main, dynamic_ncols=True)
        try:
            while self.step < args.train_steps:
                loss_sum += self.train_step().float()
                count += 1
                bar.update(1)
                save_now = self.step % args.save_and_sample_every == 0 or self.step == args.train_steps
                if count < args.log_every and not save_now:
                    continue
                loss = self._mean_over_ranks(loss_sum, count)  # the only host sync: every log_every steps
                rate = count / (time.perf_counter() - last_read)
                loss_sum.zero_()
                count = 0
                if not math.isfinite(loss) or (save_now and not self._weights_finite()):
                    bar.close()
                    return self._stop_nonfinite(loss)
                bar.set_postfix(loss=f"{loss:.4f}")
                fid = self.save_and_sample() if save_now else None
                self._record(loss=loss, steps_per_second=rate, fid=fid)
                last_read = time.perf_counter()
        except KeyboardInterrupt:
            bar.close()
            return self._interrupted(loss_sum, count)
        bar.close()
        return 0

    def describe(self) -> str:
        a = self.args
        amp = {None: "off", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.amp_dtype]
        fused = self.optimizer.param_groups[0].get("fused")
        return (f"device {self.device} x {self.world_size} process(es) | amp {amp} | channels_last {_on(a.channels_last)} | "
                f"compile {_on(a.compile)} | data on device {_on(isinstance(self.batches, utils.DeviceBatches))} | "
                f"fused Adam {_on(fused)}\nmodel {count_parameters(self.diffusion.model) / 1e6:.2f}M parameters "
                f"(--unet_dim {a.unet_dim}, --unet_dim_mults {' '.join(map(str, a.unet_dim_mults))}), "
                f"T = {a.time_steps} | batch {a.batch_size} | {a.train_steps} steps | every "
                f"{a.save_and_sample_every} steps: checkpoint and samples in {self.save_folder}/")

    def _mean_over_ranks(self, loss_sum: torch.Tensor, count: int) -> float:
        if self.world_size > 1:
            dist.all_reduce(loss_sum)  # every rank sees the same value, so all stop together on NaN
            count *= self.world_size
        return loss_sum.item() / count

    def _weights_finite(self) -> bool:
        return bool(torch.stack([p.isfinite().all() for p in self.diffusion.parameters()]).all())

    def save_and_sample(self, save_checkpoint: bool = True) -> float | None:
        """Rank 0: checkpoint, sample grid, the denoising strip and GIF (--visualize), FID (--fid)."""
        if not self.is_main:
            return None
        written = [self.save_checkpoint()] if save_checkpoint else []
        grid = self.save_folder / f"sample-{self.step}.png"
        self.save_folder.mkdir(parents=True, exist_ok=True)
        utils.save_grid(self.sample(self.args.num_samples), grid)
        written.append(grid)
        if self.args.visualize:
            strip, gif = self.save_folder / f"denoising-{self.step}.png", self.save_folder / f"denoising-{self.step}.gif"
            utils.save_denoising(self.sample_trajectory(self.args.visualize_samples), strip, gif)
            written += [strip, gif]
        fid = self.evaluate_fid() if self.args.fid else None
        self.log(f"step {self.step}: wrote {', '.join(map(str, written))}" + (f" | FID {fid:.2f}" if fid is not None else ""))
        if self._wandb is not None:
            self._wandb.log({"samples": self._wandb.Image(str(grid)), **({"fid": fid} if fid is not None else {})},
                            step=self.step)
        return fid

    def _record(self, loss: float, steps_per_second: float, fid: float | None) -> None:
        """One row of log.csv (and wandb): step, loss, steps/s, FID when measured."""
        if not self.is_main:
            return
        path = self.save_folder / "log.csv"
        self.save_folder.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["step", "loss", "steps_per_second", "fid"])
            writer.writerow([self.step, f"{loss:.6f}", f"{steps_per_second:.3f}", "" if fid is None else f"{fid:.4f}"])
        if self._wandb is not None:
            self._wandb.log({"loss": loss, "steps_per_second": steps_per_second}, step=self.step)

    def _stop_nonfinite(self, loss: float) -> int:
        kept = (f"the last good checkpoint is {self.checkpoint_path}; resume from it with a lower --learning_rate: "
                f"{self.resume_command()}") if self.checkpoint_path.exists() else "no checkpoint had been written yet"
        if self.is_main:
            print(f"error: the loss became {loss} (NaN or infinite) by step {self.step}; stopped without saving. "
                  f"{kept}", file=sys.stderr)
        return 1

    def _interrupted(self, loss_sum: torch.Tensor, count: int) -> int:
        if self.world_size == 1 and ((count and not math.isfinite(loss_sum.item())) or not self._weights_finite()):
            return self._stop_nonfinite(loss_sum.item() / max(count, 1))
        if self.is_main and self.step > 0:
            self.save_checkpoint()
            print(f"\ninterrupted at step {self.step}; saved {self.checkpoint_path}. Resume with:\n  {self.resume_command()}",
                  file=sys.stderr)
        return 130

    # ------------------------------------------------------------------ wandb and teardown

    def _start_wandb(self) -> None:
        """--wandb, or WANDB_PROJECT or WANDB_MODE=online in the environment, turns it on; never prompts."""
        wanted = self.args.wandb
        if wanted is None:
            wanted = bool(os.environ.get("WANDB_PROJECT")) or os.environ.get("WANDB_MODE") == "online"
        if not wanted or not self.is_main:
            return
        mode = os.environ.get("WANDB_MODE")
        if mode is None:  # online needs a login; without one, log offline rather than ask for it
            netrc = Path.home() / ".netrc"
            logged_in = os.environ.get("WANDB_API_KEY") or (netrc.is_file() and "api.wandb.ai" in netrc.read_text())
            mode = "online" if logged_in else "offline"
            if not logged_in:
                self.log("wandb: no login found, logging offline; upload later with `wandb sync`")
        try:
            import wandb

            self.save_folder.mkdir(parents=True, exist_ok=True)
            self._wandb = wandb
            wandb.init(project=os.environ.get("WANDB_PROJECT", "ddpm-homework"), config=vars(self.args), mode=mode,
                       dir=str(self.save_folder), resume="allow")
        except Exception as error:  # noqa: BLE001 (a logging service must never stop training)
            self._wandb = None
            warnings.warn(f"--wandb: could not start wandb ({error}); training without it")

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        if self._owns_process_group and dist.is_initialized():
            dist.destroy_process_group()


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _on(flag) -> str:
    return "on" if flag else "off"
