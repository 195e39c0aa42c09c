"""DDIM: fast, deterministic sampling from a trained DDPM (Song, Meng & Ermon, 2021).

Provided code (not a homework function). A DDPM trained with T steps can be sampled in S < T
steps: DDIM jumps along a strided subsequence tau_1 < ... < tau_S of the T steps, and with
eta = 0 every jump is deterministic, so the same x_T always gives the same image. The update
(DDIM paper, eq. 12), from step t = tau_i to s = tau_{i-1} (s = "before the first step",
abar_s = 1, when i = 1):

    x0_hat  = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)            predicted x_0, then clamped
    eps_dir = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)             the noise that clamped x0_hat implies
    sigma   = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s)        (eq. 16)
    x_s     = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_dir + sigma z,  z ~ N(0, I)

With eta = 1 and all T steps, sigma^2 is the posterior variance and the first two terms are the
posterior mean of q(x_{t-1} | x_t, x0_hat): exactly Algorithm 2.

It works with Part 1's GaussianDiffusion (eps_hat = model(x_t, t), static clamp) and with Part 2's
ConditionalGaussianDiffusion (eps_hat = guided_noise(x_t, t, y, w), its `threshold(x0_hat, method)`).
Indices count from 0 as in diffusion.py: buffer index i holds the slides' t = i + 1.
Shapes: B images, C channels, H = W = image_size; x is [B, C, H, W] in [-1, 1], y is [B] long.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# noise(shape, device) -> N(0, I) of that shape, like GaussianDiffusion.noise_like.
NoiseFn = Callable[[tuple, torch.device], torch.Tensor]


def ddim_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """The S = `steps` time indices DDIM visits, descending, from T - 1 down to 0.

    Evenly spaced over 0..T-1 and always including T - 1 (start from pure noise) and 0 (end
    on x_0): steps = T gives every index, steps = 1 jumps from T - 1 straight to x_0.
    """
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be between 1 and T = {num_timesteps}, got {steps}")
    if steps == 1:
        return [num_timesteps - 1]
    taus = torch.linspace(0, num_timesteps - 1, steps, dtype=torch.float64).round().long()
    return sorted(set(taus.tolist()), reverse=True)


def predict_noise(diffusion: nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, w: float) -> torch.Tensor:
    """eps_hat [B, C, H, W]: model(x_t, t), or with labels y [B] the guided noise of Part 2 (CFG eq. 6)."""
    if y is None:
        return diffusion.model(x, t)
    return diffusion.guided_noise(x, t, y, w)


def clip_x0(diffusion: nn.Module, x0_hat: torch.Tensor, threshold: str) -> torch.Tensor:
    """Threshold x0_hat [B, C, H, W]: the model's own `threshold` (Part 2) or Part 1's clamp to [-1, 1]."""
    if hasattr(diffusion, "threshold"):
        return diffusion.threshold(x0_hat, threshold)
    if threshold != "static":
        raise ValueError(f"an unconditional GaussianDiffusion clamps x0_hat statically; got threshold {threshold!r}")
    return x0_hat.clamp(min=-1.0, max=1.0)  # Part 1 clamps x0_hat to the data range


@torch.no_grad()
def ddim_step(diffusion: nn.Module, x: torch.Tensor, t_index: int, s_index: int, eta: float = 0.0,
              y: torch.Tensor | None = None, w: float = 0.0, threshold: str = "static",
              noise: NoiseFn | None = None) -> torch.Tensor:
    """One DDIM jump x_t -> x_s (s < t; s = -1 means x_0).

    Args:
        diffusion: a GaussianDiffusion (or the conditional one); its buffers give abar.
        x: [B, C, H, W], x_t.
        t_index, s_index: 0-indexed steps, s_index < t_index; -1 for the final jump to x_0.
        eta: 0 = deterministic DDIM, 1 = DDPM's posterior variance.
        y: [B] long labels (conditional models), or None.
        w: guidance weight (conditional models).
        threshold: "static" for Part 1; "none", "static" or "dynamic" for Part 2.
        noise: source of z; the diffusion's `noise_like` by default.
    Returns:
        x_s: [B, C, H, W].
    """
    noise = noise or diffusion.noise_like
    t = torch.full((x.shape[0],), t_index, device=x.device, dtype=torch.long)
    abar_t = diffusion.alphas_cumprod[t_index]
    abar_s = diffusion.alphas_cumprod[s_index] if s_index >= 0 else torch.ones_like(abar_t)

    eps_hat = predict_noise(diffusion, x, t, y, w)
    x0_hat = clip_x0(diffusion, (x - (1 - abar_t).sqrt() * eps_hat) / abar_t.sqrt(), threshold)  # eq. 12, first term
    eps_dir = (x - abar_t.sqrt() * x0_hat) / (1 - abar_t).sqrt()  # the noise consistent with the clamped x0_hat
    sigma = eta * ((1 - abar_s) / (1 - abar_t)).sqrt() * (1 - abar_t / abar_s).sqrt()  # eq. 16
    x_s = abar_s.sqrt() * x0_hat + (1 - abar_s - sigma**2).clamp(min=0).sqrt() * eps_dir  # eq. 12, no noise yet
    if s_index >= 0 and eta > 0:
        x_s = x_s + sigma * noise(x.shape, x.device)  # + sigma_t z
    return x_s


@torch.no_grad()
def ddim_sample_loop(diffusion: nn.Module, x_T: torch.Tensor, steps: int, eta: float = 0.0,
                     y: torch.Tensor | None = None, w: float = 0.0, threshold: str = "static",
                     noise: NoiseFn | None = None,
                     callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Run DDIM from x_T [B, C, H, W] in `steps` jumps; returns x_0 [B, C, H, W] in [-1, 1].

    `callback(i, x)` is called after jump i = 1..S with the current x (to record frames or to
    stop early by raising); other arguments as in `ddim_step`.
    """
    taus = ddim_timesteps(diffusion.num_timesteps, steps)
    x = x_T
    for i, t_index in enumerate(taus):
        s_index = taus[i + 1] if i + 1 < len(taus) else -1
        x = ddim_step(diffusion, x, t_index, s_index, eta, y, w, threshold, noise)
        if callback is not None:
            callback(i + 1, x)
    return x


@torch.no_grad()
def ddim_sample(diffusion: nn.Module, batch_size: int, steps: int, eta: float = 0.0,
                y: torch.Tensor | None = None, w: float = 0.0, threshold: str = "static",
                noise: NoiseFn | None = None) -> torch.Tensor:
    """Like GaussianDiffusion.sample: x_T from `noise` (default `noise_like`), DDIM, images in [0, 1].

    Returns:
        [batch_size, C, H, W] in [0, 1], on the diffusion's device.
    """
    noise = noise or diffusion.noise_like
    x_T = noise((batch_size, diffusion.channels, diffusion.image_size, diffusion.image_size), diffusion.device)
    x_0 = ddim_sample_loop(diffusion, x_T, steps, eta, y, w, threshold, noise)
    return (x_0 + 1) / 2
