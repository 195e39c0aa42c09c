"""Evaluating a diffusion model as it trains: samples in batches, the denoising trajectory, and FID.

These functions read a model and write no files. The trainer calls them with its EMA model at
each save point; grids.py turns what they return into the sample grid and the denoising strip,
and fid.py holds the FID computation itself.

    sample_in_batches      n images, --sample_batch_size at a time (memory stays bounded)
    diffusion_samples      one batch from Algorithm 2 (the student's `sample`) or from DDIM
    denoising_trajectory   every step x_T, ..., x_0 of a few samples, for the strip and the GIF
    FidEvaluator           FID of the samples against the training images
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

import fid
from ddim import ddim_sample, ddim_sample_loop
from diffusion import GaussianDiffusion


def sample_in_batches(draw: Callable[[int], torch.Tensor], num_images: int, batch_size: int) -> torch.Tensor:
    """`draw(b)` -> [b, 3, S, S] images, called for batches of at most `batch_size`; returns all num_images as float."""
    chunks = [draw(min(batch_size, num_images - i)).float() for i in range(0, num_images, batch_size)]
    return torch.cat(chunks)


def diffusion_samples(model: GaussianDiffusion, batch_size: int, sampler: str = "ancestral",
                      sampling_steps: int | None = None, ddim_eta: float = 0.0) -> torch.Tensor:
    """[batch_size, 3, S, S] in [0, 1]: the student's Algorithm 2 (`model.sample`), or DDIM (ddim.py)
    with `sampling_steps` (None: all T) and `ddim_eta` when sampler is "ddim"."""
    if sampler == "ddim":
        return ddim_sample(model, batch_size, sampling_steps or model.num_timesteps, ddim_eta)
    return model.sample(batch_size)


def denoising_trajectory(model: GaussianDiffusion, num_images: int, image_size: int, device: torch.device,
                         sampler: str = "ancestral", sampling_steps: int | None = None,
                         ddim_eta: float = 0.0) -> list[torch.Tensor]:
    """The reverse process x_T, ..., x_0 of `num_images` samples: steps + 1 CPU tensors [N, 3, S, S] in [0, 1].

    Ancestral sampling runs the student's `p_sample` step by step (T + 1 frames); DDIM visits its
    `sampling_steps` (+ 1 frames).
    """
    x = model.noise_like((num_images, 3, image_size, image_size), device)
    frames = [x]
    if sampler == "ddim":
        ddim_sample_loop(model, x, sampling_steps or model.num_timesteps, ddim_eta,
                         callback=lambda i, x: frames.append(x.float()))
    else:
        for t_index in reversed(range(model.num_timesteps)):
            t = torch.full((num_images,), t_index, device=device, dtype=torch.long)
            x = model.p_sample(x, t, t_index).float()
            frames.append(x)
    return [((frame.clamp(-1, 1) + 1) / 2).cpu() for frame in frames]


class FidEvaluator:
    """FID of a model's samples against the training images.

    The metric (and the Inception weights it needs) is made when this is built, before training,
    so that missing weights fail at once. The real images' statistics are computed at the first
    evaluation, once per run, and cached on disk at `statistics_path` for later runs.
    """

    def __init__(self, weights_path: str | None, device: torch.device, statistics_path: Path):
        metric_device = "cpu" if device.type == "mps" else device  # MPS has no float64
        self.metric = fid.make_fid_metric(weights_path).to(metric_device)
        self.statistics_path = statistics_path
        self.real_images: torch.Tensor | None = None  # [N, 3, S, S] uint8, set before the first evaluation

    def __call__(self, sample: Callable[[int], torch.Tensor], num_samples: int, batch_size: int) -> float:
        """FID of `num_samples` images from `sample(b)` ([b, 3, S, S] in [0, 1]), drawn `batch_size` at a time."""
        if self.real_images is not None:  # later evaluations reuse the statistics kept in the metric
            fid.load_real_statistics(self.metric, self.real_images, self.statistics_path)
            self.real_images = None
        batches = (sample(min(batch_size, num_samples - i)) for i in range(0, num_samples, batch_size))
        return fid.compute_fid(self.metric, tqdm(batches, total=math.ceil(num_samples / batch_size),
                                                 desc="FID: samples", unit="batch", leave=False))
