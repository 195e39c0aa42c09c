"""Training Part 3's energy-based model with the same loop, data, checkpoints, grids and FID as the DDPM.

`EnergyTrainer` is a `Trainer` (trainer.py) that trains energy.py's EnergyModel instead of the
diffusion model; main.py uses it for `--model ebm`. One step:

    batch = next_batch()                      uint8 images -> random flip -> [-1, 1]
    loss  = energy_model(batch)               the student's EnergyModel.forward: buffer -> K Langevin
                                              steps -> update buffer -> contrastive divergence loss
    backward, clip the gradient norm, Adam step (beta1 = 0), update the EMA of the weights

What differs from the DDPM: sampling needs autograd (Langevin follows dE/dx), so it runs outside
inference mode and in float32; log.csv gains `energy_real` and `energy_fake` (mean energy of the
current training batch and of replay-buffer samples); every save also writes `buffer-<step>.png`,
the training chains' current samples, beside `sample-<step>.png` (fresh chains from noise, EMA weights).
"""

from __future__ import annotations

import torch

import grids
from energy import EnergyModel, EnergyNet
from trainer import Trainer
from unet import count_parameters

# The replay buffer is part of the model: a checkpoint only resumes into the same one.
ENERGY_ARCHITECTURE_FIELDS = ("model", "image_size", "energy_dim", "buffer_size")
# Replay-buffer samples whose energy is logged at each log line.
LOGGED_FAKES = 256


class EnergyTrainer(Trainer):
    """A Trainer for energy.py's EnergyModel (config.model == "ebm")."""

    TEST_FILE = "test_energy.py"

    architecture_fields = ENERGY_ARCHITECTURE_FIELDS
    # A longer average than the DDPM's: the energy chases its own negatives, so successive weights
    # disagree more; their average is a smoother energy whose fresh chains make better samples.
    ema_decay = 0.999

    def make_model(self) -> torch.nn.Module:
        c = self.config
        net = EnergyNet(channels=3, dim=c.energy_dim)
        return EnergyModel(net, image_size=c.image_size, channels=3, step_size=c.step_size, noise_scale=c.noise_scale,
                           langevin_steps=c.langevin_steps, alpha=c.alpha, buffer_size=c.buffer_size,
                           reinit_prob=c.reinit_prob, sample_steps=c.sample_steps)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        optimizer = super()._make_optimizer()
        for group in optimizer.param_groups:
            # beta1 = 0 (no momentum), as in the EBM literature: the negatives move with the model,
            # and momentum on that moving target makes the two energies oscillate.
            group["betas"] = (0.0, 0.999)
        return optimizer

    def compute_loss(self, batch: torch.Tensor) -> torch.Tensor:
        self._last_batch = batch
        with torch.autocast(self.device.type, enabled=False):  # Langevin's small steps need float32
            return self.wrapped_model(batch.float())

    def sample(self, num_images: int) -> torch.Tensor:
        """[num_images, 3, S, S] in [0, 1]: fresh Langevin chains from uniform noise on the EMA energy."""
        model, size = self.ema.module, self.config.sample_batch_size
        chunks = [model.sample(min(size, num_images - i)).float() for i in range(0, num_images, size)]
        return torch.cat(chunks).clamp(0, 1)

    def sample_trajectory(self, num_images: int) -> list[torch.Tensor]:
        """Fresh chains from noise, one frame per Langevin step: sample_steps + 1 tensors [N, 3, S, S] in [0, 1]."""
        model = self.ema.module
        shape = (num_images, 3, self.config.image_size, self.config.image_size)
        x = model.uniform_like(shape, self.device)
        frames = [x]
        for _ in range(self.config.sample_steps):
            x = model.langevin_step(x)
            frames.append(x)
        return [((frame + 1) / 2).cpu() for frame in frames]

    def save_and_sample(self, save_checkpoint: bool = True) -> list:
        written = super().save_and_sample(save_checkpoint)
        if self.is_main:
            path = self.save_folder / f"buffer-{self.step}.png"
            replay = (self.model.replay[: self.config.num_samples] + 1) / 2
            self._write(path, lambda: grids.save_grid(replay, path))
            written.append(path)
        return written

    @torch.no_grad()
    def extra_log_values(self) -> dict[str, float]:
        """Mean energy of the last training batch and of replay-buffer samples (the current negatives)."""
        batch = getattr(self, "_last_batch", None)
        if batch is None:
            return {"energy_real": float("nan"), "energy_fake": float("nan")}
        fakes = self.model.replay[torch.randperm(self.config.buffer_size, device=self.device)[:LOGGED_FAKES]]
        return {"energy_real": self.model.energy(batch.float()).mean().item(),
                "energy_fake": self.model.energy(fakes).mean().item()}

    def describe_model(self) -> str:
        c = self.config
        return (f"energy-based model: EnergyNet {count_parameters(self.model.energy_net) / 1e6:.3f}M parameters "
                f"(--energy_dim {c.energy_dim}) | {c.langevin_steps} Langevin steps of size {c.step_size}, noise "
                f"{c.noise_scale} | alpha {c.alpha} | buffer {c.buffer_size}, "
                f"{c.reinit_prob:.0%} fresh chains")
