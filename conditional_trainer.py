"""Training Part 2's class-conditional DDPM with classifier-free guidance (main.py --class_cond).

`ConditionalTrainer` is a `Trainer` (trainer.py) whose batches are (images, labels) and whose model
is diffusion.py's ConditionalGaussianDiffusion; the loop, checkpoints, EMA and FID are the base's.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

import grids
import training_data
from ddim import ddim_sample, ddim_sample_loop
from diffusion import ConditionalGaussianDiffusion
from trainer import TrainConfig, Trainer
from unet import Unet
from utils import UserError


class ConditionalTrainer(Trainer):
    """Part 2: a class-conditional DDPM with classifier-free guidance (main.py --class_cond).

    Every class folder under data_path (or those in `classes`) is one label, in sorted name
    order; without data_path the demo set's shapes are the classes. A batch is (images, labels);
    the model is a ConditionalGaussianDiffusion around Unet(num_classes=K), which drops labels to
    the null label with probability p_uncond. Grids have one row per class (`sample_classes`),
    one grid per guidance weight w (`sample-w<w>-<step>.png`, with the first `threshold`
    method), plus the class-by-guidance figure `guidance-<step>.png` with a panel per method.
    FID and the denoising strip use the first w and method. Checkpoints record `class_names`.
    """

    FIGURE_SAMPLES = 4  # samples per (class, w) cell of the guidance figure
    TEST_FILE = "test_conditional.py"

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        unknown = [name for name in config.sample_classes or [] if name not in self.class_names]
        if unknown:
            known = "the checkpoint's" if config.load_path else "this model's"
            raise UserError(f"--sample_classes {' '.join(unknown)}: not one of {known} classes, which are "
                            f"{', '.join(self.class_names)}")
        self.rows = torch.tensor([self.class_names.index(n) for n in config.sample_classes or self.class_names])

    def _image_folder(self) -> Path | None:
        """data_path itself: each class folder in it is a label (load_class_folders checks them)."""
        return None if self.config.data_path is None else self._checked_data_path()

    def _load_images(self, folder: Path | None) -> torch.Tensor:
        c = self.config
        if folder is None:
            self.class_names = list(training_data.DEMO_CLASSES)
            self.labels = torch.arange(c.demo_images) % len(self.class_names)
            images = training_data.make_demo_dataset(c.demo_images, c.image_size, seed=0, labels=self.labels)
        else:
            images, self.labels, self.class_names = training_data.load_class_folders(c.data_path, c.image_size, c.classes)
        counts = torch.bincount(self.labels, minlength=len(self.class_names)).tolist()
        self.log(f"data: {len(images)} images in {len(counts)} classes, {c.image_size}x{c.image_size}; label: class "
                 f"(images) " + ", ".join(f"{k}: {name} ({n})" for k, (name, n) in enumerate(zip(self.class_names, counts))))
        if len(images) < self.world_size:
            raise UserError(f"--data_path: {len(images)} images, fewer than the {self.world_size} processes")
        return images

    def make_model(self) -> torch.nn.Module:
        c = self.config
        unet = Unet(dim=c.unet_dim, dim_mults=tuple(c.unet_dim_mults), channels=3, num_classes=len(self.class_names))
        return ConditionalGaussianDiffusion(unet, image_size=c.image_size, num_classes=len(self.class_names), channels=3,
                                            timesteps=c.time_steps, p_uncond=c.p_uncond)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_0 [B, 3, S, S] float in [-1, 1], y [B] long in 0..K-1) on the device: the next augmented batch."""
        images, labels = next(self.batches)
        x_0 = training_data.augment(images)
        if self.channels_last:
            x_0 = x_0.contiguous(memory_format=torch.channels_last)
        return x_0, labels

    def compute_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Algorithm 1 with label dropout: ConditionalGaussianDiffusion.forward(x_0, y)."""
        x_0, y = batch
        return self.wrapped_model(x_0, y)

    def describe(self) -> str:
        c = self.config
        return (super().describe() + f"\nclass-conditional: {len(self.class_names)} classes, p_uncond {c.p_uncond} | "
                f"samples: guidance w {' '.join(f'{w:g}' for w in c.guidance)}, threshold {' '.join(c.threshold)}")

    # ------------------------------------------------------------------ sampling

    @torch.inference_mode()
    def sample_classes(self, y: torch.Tensor, w: float, threshold: str, seed: int | None = None) -> torch.Tensor:
        """[len(y), 3, S, S] in [0, 1]: the EMA model's samples of the classes y [N] long, --sample_batch_size at a time.

        With a seed, the starting and per-step noise are drawn from it (so every w starts from the same
        noise) without disturbing the training's random stream.
        """
        model, size = self.ema.module, self.config.sample_batch_size
        y = y.to(self.device)
        devices = [self.device.index if self.device.index is not None else 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=seed is not None), self._autocast():
            if seed is not None:
                torch.manual_seed(seed)
            chunks = [self._sample_labels(model, y[i : i + size], w, threshold).float() for i in range(0, len(y), size)]
        return torch.cat(chunks)

    def _sample_labels(self, model: ConditionalGaussianDiffusion, y: torch.Tensor, w: float, threshold: str) -> torch.Tensor:
        """The student's Part 2 sampler (`model.sample`), or DDIM with --sampling_steps and --ddim_eta."""
        c = self.config
        if c.sampler == "ddim":
            return ddim_sample(model, len(y), c.sampling_steps or model.num_timesteps, c.ddim_eta, y, w, threshold)
        return model.sample(y, w=w, threshold=threshold)

    def sample(self, num_images: int) -> torch.Tensor:
        """[num_images, 3, S, S] in [0, 1], the classes in turn, with the first --guidance w and --threshold (FID)."""
        y = torch.arange(num_images) % len(self.class_names)
        return self.sample_classes(y, self.config.guidance[0], self.config.threshold[0])

    @torch.inference_mode()
    def sample_trajectory(self, num_images: int) -> list[torch.Tensor]:
        """The reverse process of a few samples, the --sample_classes in turn: T + 1 tensors [N, 3, S, S] in [0, 1]."""
        model, c = self.ema.module, self.config
        y = self.rows[torch.arange(num_images) % len(self.rows)].to(self.device)
        x = model.noise_like((num_images, 3, c.image_size, c.image_size), self.device)
        frames = [x]
        with self._autocast():
            if c.sampler == "ddim":
                ddim_sample_loop(model, x, c.sampling_steps or model.num_timesteps, c.ddim_eta, y, c.guidance[0],
                                 c.threshold[0], callback=lambda i, x: frames.append(x.float()))
                return [((frame.clamp(-1, 1) + 1) / 2).cpu() for frame in frames]
            for t_index in reversed(range(model.num_timesteps)):
                t = torch.full((num_images,), t_index, device=self.device, dtype=torch.long)
                x = model.p_sample(x, t, t_index, y, w=c.guidance[0], threshold=c.threshold[0]).float()
                frames.append(x)
        return [((frame.clamp(-1, 1) + 1) / 2).cpu() for frame in frames]

    def save_and_sample(self, save_checkpoint: bool = True) -> list[Path]:
        """Rank 0: the checkpoint, a grid per w (a row per class), the class-by-guidance figure, the strip (visualize)."""
        if not self.is_main:
            return []
        c = self.config
        written = [self.save_checkpoint()] if save_checkpoint else []
        self.save_folder.mkdir(parents=True, exist_ok=True)
        per_row = max(1, math.ceil(c.num_samples / len(self.rows)))
        y = self.rows.repeat_interleave(per_row)  # class-major: a row of each class
        for w in c.guidance:
            grid = self.save_folder / f"sample-w{w:g}-{self.step}.png"
            images = self.sample_classes(y, w, c.threshold[0], seed=c.seed)
            self._write(grid, lambda images=images, grid=grid: grids.save_class_grid(images, len(self.rows), grid))
            written.append(grid)
        y = self.rows.repeat_interleave(self.FIGURE_SAMPLES)
        panels = {method: torch.stack([self.sample_classes(y, w, method, seed=c.seed).unflatten(0, (len(self.rows), -1))
                                       for w in c.guidance]) for method in c.threshold}  # [W, K, n, 3, S, S] each
        figure = self.save_folder / f"guidance-{self.step}.png"
        self._write(figure, lambda: grids.save_guidance_figure(panels, [self.class_names[k] for k in self.rows],
                                                               c.guidance, figure))
        written.append(figure)
        if c.visualize:
            strip, gif = self.save_folder / f"denoising-{self.step}.png", self.save_folder / f"denoising-{self.step}.gif"
            frames = self.sample_trajectory(c.visualize_samples)
            self._write(strip, lambda: grids.save_denoising(frames, strip, gif))
            written += [strip, gif]
        if self._wandb is not None:
            self._wandb.log({"guidance": self._wandb.Image(str(figure))}, step=self.step)
        return written
