"""Denoising diffusion probabilistic models (DDPM), written as the lecture's algorithms.

Read this file top to bottom. The provided parts (the noise schedule, `extract`,
`noise_like` and the precomputed buffers) come first; then the six functions you
write, in the order the algorithms use them:

    q_sample       the forward process q(x_t | x_0), in closed form
    p_losses       Algorithm 1's loss for given x_0, t and noise
    forward        Algorithm 1: draw t and the noise, return the loss
    p_sample       one step of Algorithm 2: x_t -> x_{t-1}
    p_sample_loop  Algorithm 2: x_T -> ... -> x_0
    sample         draw x_T ~ N(0, I), run the loop, map to image range [0, 1]

Notation. The slides count time t = 1..T; this code counts t = 0..T-1. Index i in
every buffer holds the slides' t = i + 1, so `alphas[0]` is alpha_1 and
`alphas_cumprod[T - 1]` is alpha-bar_T. We write abar_t for alpha-bar_t, the
cumulative product alpha_1 * ... * alpha_t, and abar_{t-1} = 1 before the first step.

Shapes. B is the batch size, C the number of image channels, H = W = image_size.
Images x_0, x_t and noise are [B, C, H, W] float tensors scaled to [-1, 1]; a time
step t is a [B] long tensor (one step per example, so one batch mixes many steps).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def cosine_schedule(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """The improved cosine schedule of Nichol & Dhariwal (2021), as on the slides.

        f(t)    = cos(((t / T + s) / (1 + s)) * pi / 2) ** 2      for t = 0..T
        abar_t  = f(t) / f(0)
        alpha_t = clip(abar_t / abar_{t-1}, 0.001, 1)             for t = 1..T

    The clip keeps alpha_T away from 0: without it the last step would divide by
    (almost) zero. Computed in float64 so the ratios are exact, returned as float32.

    Returns:
        alphas: [T] float32, alphas[i] = alpha_{i+1}.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be at least 1, got {timesteps}")
    t = torch.arange(timesteps + 1, dtype=torch.float64)
    f = torch.cos(((t / timesteps + s) / (1 + s)) * math.pi / 2) ** 2
    alphas_bar = f / f[0]
    alphas = (alphas_bar[1:] / alphas_bar[:-1]).clamp(0.001, 1.0)
    return alphas.float()


def extract(a: torch.Tensor, t: torch.Tensor, x_shape: torch.Size | tuple) -> torch.Tensor:
    """Pick a[t[b]] for every example b, shaped to broadcast against a batch of images.

    Each example in a batch has its own time step, so a schedule value such as abar_t
    is a different number for each image. `extract` gathers those numbers and adds
    trailing singleton dimensions so that `extract(a, t, x.shape) * x` scales image b
    by a[t[b]].

    Args:
        a: [T] a schedule buffer (alphas, alphas_cumprod, ...).
        t: [B] long, 0-indexed time steps, on a's device.
        x_shape: the shape of the batch it will multiply, e.g. (B, C, H, W).
    Returns:
        [B, 1, 1, 1] (one 1 per dimension of x_shape after the first).
    """
    out = a.gather(0, t)
    return out.reshape(t.shape[0], *((1,) * (len(x_shape) - 1)))


class GaussianDiffusion(nn.Module):
    """A DDPM around a noise-predicting network `model(x_t, t) -> eps_hat`.

    Args:
        model: maps x_t [B, C, H, W] and t [B] long to predicted noise [B, C, H, W].
        image_size: H = W of the images.
        channels: C, 3 for RGB, 1 for greyscale.
        timesteps: T, the number of diffusion steps.

    Buffers (float32, [T], index i is the slides' t = i + 1) move with `.to(device)`
    and are saved in checkpoints. `alphas` and `alphas_cumprod` are the homework's;
    the rest are precomputed from them so that sampling does no schedule arithmetic.
    """

    def __init__(self, model: nn.Module, image_size: int, channels: int = 3, timesteps: int = 50):
        super().__init__()
        self.model = model
        self.image_size = image_size
        self.channels = channels
        self.num_timesteps = timesteps

        alphas = cosine_schedule(timesteps).double()
        alphas_cumprod = torch.cumprod(alphas, dim=0)  # abar_t
        alphas_cumprod_prev = F.pad(alphas_cumprod[:-1], (1, 0), value=1.0)  # abar_{t-1}, abar_0 = 1

        def register(name: str, value: torch.Tensor) -> None:
            self.register_buffer(name, value.float())

        register("alphas", alphas)
        register("alphas_cumprod", alphas_cumprod)
        register("alphas_cumprod_prev", alphas_cumprod_prev)
        # q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)
        register("sqrt_alphas_cumprod", alphas_cumprod.sqrt())
        register("sqrt_one_minus_alphas_cumprod", (1.0 - alphas_cumprod).sqrt())
        # q(x_{t-1} | x_t, x_0) = N(coef_x0 * x_0 + coef_xt * x_t, posterior_variance I)
        register("posterior_variance", (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod) * (1.0 - alphas))
        register("posterior_mean_coef_x0", alphas_cumprod_prev.sqrt() * (1.0 - alphas) / (1.0 - alphas_cumprod))
        register("posterior_mean_coef_xt", alphas.sqrt() * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod))

    @property
    def device(self) -> torch.device:
        return self.alphas.device

    def noise_like(self, shape: torch.Size | tuple, device: torch.device | str) -> torch.Tensor:
        """Standard Gaussian noise N(0, I) of the given shape: the ONLY source of noise here.

        Every function below that needs random noise calls this method instead of
        `torch.randn`. That single seam lets the grader replace it with fixed tensors
        and check your arithmetic exactly, whatever random generator your torch has.
        """
        return torch.randn(shape, device=device)

    # ------------------------------------------------------------------
    # Algorithm 1: training
    # ------------------------------------------------------------------

    def q_sample(self, x_0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample the forward process in one jump: x_t ~ q(x_t | x_0).

            x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * noise

        Args:
            x_0: [B, C, H, W] clean images in [-1, 1].
            t: [B] long, 0-indexed time steps.
            noise: [B, C, H, W], eps ~ N(0, I).
        Returns:
            x_t: [B, C, H, W].
        """
        # BEGIN SOLUTION
        sqrt_abar = extract(self.sqrt_alphas_cumprod, t, x_0.shape)
        sqrt_one_minus_abar = extract(self.sqrt_one_minus_alphas_cumprod, t, x_0.shape)
        return sqrt_abar * x_0 + sqrt_one_minus_abar * noise
        # END SOLUTION

    def p_losses(self, x_0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The loss of Algorithm 1 for given images, steps and noise.

            loss = mean | noise - model(x_t, t) |      (L1, averaged over every element)

        Args:
            x_0: [B, C, H, W] clean images in [-1, 1].
            t: [B] long, 0-indexed time steps.
            noise: [B, C, H, W], the eps used to make x_t.
        Returns:
            A scalar tensor.
        """
        # BEGIN SOLUTION
        x_t = self.q_sample(x_0, t, noise)
        predicted_noise = self.model(x_t, t)
        return F.l1_loss(predicted_noise, noise)
        # END SOLUTION

    def forward(self, x_0: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Algorithm 1: one training loss for a batch of clean images.

            t ~ Uniform{0, ..., T-1}, one per example, on x_0's device
            eps ~ N(0, I) from `noise_like` (unless `noise` is given)
            loss = p_losses(x_0, t, eps)

        Args:
            x_0: [B, C, H, W] clean images in [-1, 1].
            noise: optional [B, C, H, W]; drawn with `noise_like` when None.
        Returns:
            A scalar tensor.
        """
        # BEGIN SOLUTION
        batch_size = x_0.shape[0]
        t = torch.randint(0, self.num_timesteps, (batch_size,), device=x_0.device, dtype=torch.long)
        if noise is None:
            noise = self.noise_like(x_0.shape, x_0.device)
        return self.p_losses(x_0, t, noise)
        # END SOLUTION

    # ------------------------------------------------------------------
    # Algorithm 2: sampling
    # ------------------------------------------------------------------

    @torch.no_grad()
    def p_sample(self, x: torch.Tensor, t: torch.Tensor, t_index: int) -> torch.Tensor:
        """One reverse step of Algorithm 2: x_t -> x_{t-1}.

            eps_hat   = model(x_t, t)
            x0_hat    = clamp((x_t - sqrt(1 - abar_t) * eps_hat) / sqrt(abar_t), -1, 1)
            mean      = sqrt(abar_{t-1}) (1 - alpha_t) / (1 - abar_t) * x0_hat
                      + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) * x_t
            variance  = (1 - abar_{t-1}) / (1 - abar_t) * (1 - alpha_t)
            x_{t-1}   = mean                                   if t_index == 0
                      = mean + sqrt(variance) * z, z ~ N(0, I)  otherwise (z from `noise_like`)

        Args:
            x: [B, C, H, W], x_t.
            t: [B] long, every entry equal to t_index.
            t_index: the same step as a Python int (so no GPU value is read back).
        Returns:
            x_{t-1}: [B, C, H, W].
        """
        # BEGIN SOLUTION
        predicted_noise = self.model(x, t)
        sqrt_abar = extract(self.sqrt_alphas_cumprod, t, x.shape)
        sqrt_one_minus_abar = extract(self.sqrt_one_minus_alphas_cumprod, t, x.shape)
        x0_hat = ((x - sqrt_one_minus_abar * predicted_noise) / sqrt_abar).clamp(-1.0, 1.0)
        mean = (
            extract(self.posterior_mean_coef_x0, t, x.shape) * x0_hat
            + extract(self.posterior_mean_coef_xt, t, x.shape) * x
        )
        if t_index == 0:
            return mean
        std = extract(self.posterior_variance, t, x.shape).sqrt()
        return mean + std * self.noise_like(x.shape, x.device)
        # END SOLUTION

    @torch.no_grad()
    def p_sample_loop(self, img: torch.Tensor) -> torch.Tensor:
        """Algorithm 2: run the reverse process from x_T = img down to x_0.

            for t_index = T-1, ..., 0:  x <- p_sample(x, t, t_index)

        Args:
            img: [B, C, H, W], x_T (pure noise when sampling).
        Returns:
            x_0: [B, C, H, W] in [-1, 1].
        """
        # BEGIN SOLUTION
        batch_size = img.shape[0]
        for t_index in reversed(range(self.num_timesteps)):
            t = torch.full((batch_size,), t_index, device=img.device, dtype=torch.long)
            img = self.p_sample(img, t, t_index)
        return img
        # END SOLUTION

    @torch.no_grad()
    def sample(self, batch_size: int) -> torch.Tensor:
        """Generate images: x_T ~ N(0, I), run Algorithm 2, map [-1, 1] to [0, 1].

            x_T = noise_like((B, C, H, W), device)
            images = (p_sample_loop(x_T) + 1) / 2

        Args:
            batch_size: B, the number of images.
        Returns:
            [B, C, H, W] in [0, 1], on the buffers' device.
        """
        # BEGIN SOLUTION
        shape = (batch_size, self.channels, self.image_size, self.image_size)
        img = self.noise_like(shape, self.device)
        x_0 = self.p_sample_loop(img)
        return (x_0 + 1) / 2
        # END SOLUTION


# ======================================================================
# Part 2: class-conditional diffusion, classifier-free guidance, thresholding
# ======================================================================
#
# The class below inherits everything above and adds eight functions, each tagged
# "Part 2" in its docstring, in the order the algorithms use them:
#
#     drop_labels    replace each label by the null label K with probability p_uncond
#     p_losses       Algorithm 1's loss, the network now also told the label
#     forward        Algorithm 1 with label dropout
#     guided_noise   classifier-free guidance: eps_bar = (1 + w) eps(x_t, y) - w eps(x_t, null)
#     threshold      x0_hat as is ("none"), clamped ("static") or dynamically thresholded
#     p_sample       Algorithm 2's step with guided noise and thresholding
#     p_sample_loop  Algorithm 2, every step with the same labels, w and threshold
#     sample         draw x_T, run the loop, map to [0, 1]
#
# Labels y are [B] long tensors; the other shapes are Part 1's.

THRESHOLDS = ("none", "static", "dynamic")


class ConditionalGaussianDiffusion(GaussianDiffusion):
    """A DDPM around a class-conditional noise predictor `model(x_t, t, y) -> eps_hat` (Part 2).

    Classifier-free guidance (Ho & Salimans, 2022) trains ONE network for both predictions:
    labels are integers 0..K-1 (K = num_classes) and the extra label K is the null label,
    "no class". During training each label is replaced by the null label with probability
    p_uncond, so the network learns eps(x_t, t, y) and eps(x_t, t, null) at once. Sampling
    mixes the two (guided_noise) and thresholds the predicted x_0 (threshold).

    Everything of Part 1 is inherited unchanged: the schedule buffers, `extract`,
    `noise_like` and q_sample (yours, from Part 1; in a handout of Part 2 alone, Part 1's
    functions above come already written).

    Args:
        model: maps x_t [B, C, H, W], t [B] long and y [B] long in 0..K to eps_hat [B, C, H, W],
            e.g. unet.Unet(num_classes=K).
        image_size: H = W of the images.
        num_classes: K, the number of classes; label K is the null label.
        channels: C.
        timesteps: T.
        p_uncond: the probability of replacing a training label by the null label.

    Attributes: `null_label` (= K) and `dynamic_quantile` (p of dynamic thresholding, 0.995).

    Randomness. Noise comes from `noise_like` as in Part 1; the label dropout draws its
    uniform numbers from `uniform_like`, the second seam. The grader replaces both with fixed
    tensors, so that your arithmetic can be checked exactly.
    """

    def __init__(self, model: nn.Module, image_size: int, num_classes: int, channels: int = 3,
                 timesteps: int = 50, p_uncond: float = 0.1):
        super().__init__(model, image_size, channels=channels, timesteps=timesteps)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if not 0.0 <= float(p_uncond) <= 1.0:
            raise ValueError(f"p_uncond is a probability: it must lie in [0, 1], got {p_uncond}")
        self.num_classes = num_classes
        self.null_label = num_classes
        self.p_uncond = float(p_uncond)
        self.dynamic_quantile = 0.995

    def uniform_like(self, shape: torch.Size | tuple, device: torch.device | str) -> torch.Tensor:
        """Uniform numbers in [0, 1) of the given shape: the only source of randomness of the
        label dropout (the grader replaces it with fixed tensors, as it does `noise_like`)."""
        return torch.rand(shape, device=device)

    def check_labels(self, y, device: torch.device | str | None = None) -> torch.Tensor:
        """Validate labels and return them as a [B] long tensor on `device`.

        Accepts a list of ints or a 1-D integer tensor. A label outside 0..K (K = the null label)
        raises ValueError here, before it reaches the network: on a GPU, an embedding lookup with
        such a label stops the process with an unreadable device-side assert. Labels already on a
        GPU are checked for type and shape only, since reading their values would make the host
        wait for the GPU at every training step (the trainer checks its labels once, at loading).
        """
        wrong = "labels must be a 1-D list or tensor of ints"
        if isinstance(y, torch.Tensor):
            labels = y.detach()
        elif isinstance(y, (list, tuple, range)) and all(isinstance(v, int) and not isinstance(v, bool) for v in y):
            labels = torch.tensor(list(y), dtype=torch.long)
        else:
            raise ValueError(f"{wrong}, got {y!r}"[:200])
        if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"{wrong}, got {labels.dtype} of shape {list(labels.shape)}")
        if labels.device.type == "cpu":
            bad = (labels < 0) | (labels > self.null_label)
            if bad.any():
                raise ValueError(f"label {int(labels[bad][0])} is outside 0..{self.null_label}: classes are "
                                 f"0..{self.num_classes - 1} and {self.null_label} is the null label")
        device = self.device if device is None else device
        return labels.to(device=device, dtype=torch.long)

    # ------------------------------------------------------------------
    # Algorithm 1 with label dropout
    # ------------------------------------------------------------------

    def drop_labels(self, y: torch.Tensor) -> torch.Tensor:
        """Part 2. Replace each label by the null label K with probability p_uncond, independently.

            u      = uniform_like(y.shape, y.device)         one number in [0, 1) per example
            y'_b   = K      if u_b < p_uncond                (K = self.null_label)
                   = y_b    otherwise

        Args:
            y: [B] long labels in 0..K-1.
        Returns:
            [B] long, a new tensor (y itself is left unchanged).
        """
        # BEGIN SOLUTION
        drop = self.uniform_like(y.shape, y.device) < self.p_uncond
        return torch.where(drop, torch.full_like(y, self.null_label), y)
        # END SOLUTION

    def p_losses(self, x_0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Part 2. Part 1's loss with the label given to the network.

            x_t  = q_sample(x_0, t, noise)                    (Part 1's)
            loss = mean | noise - model(x_t, t, y) |

        Args:
            x_0: [B, C, H, W] clean images in [-1, 1].
            t: [B] long, 0-indexed time steps.
            noise: [B, C, H, W], the eps used to make x_t.
            y: [B] long labels in 0..K, already dropped (forward drops them).
        Returns:
            A scalar tensor.
        """
        # BEGIN SOLUTION
        x_t = self.q_sample(x_0, t, noise)
        return F.l1_loss(self.model(x_t, t, y), noise)
        # END SOLUTION

    def forward(self, x_0: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Part 2. Algorithm 1 with label dropout: one training loss for a labelled batch.

            t   ~ Uniform{0, ..., T-1}, one per example, on x_0's device
            eps = noise if given, else noise_like(x_0.shape, x_0.device)
            y'  = drop_labels(y)
            loss = p_losses(x_0, t, eps, y')

        Args:
            x_0: [B, C, H, W] clean images in [-1, 1].
            y: [B] labels in 0..K-1 (a list of ints works too; validated on the CPU first).
            noise: optional [B, C, H, W].
        Returns:
            A scalar tensor.
        """
        y = self.check_labels(y, x_0.device)
        # BEGIN SOLUTION
        t = torch.randint(0, self.num_timesteps, (x_0.shape[0],), device=x_0.device, dtype=torch.long)
        if noise is None:
            noise = self.noise_like(x_0.shape, x_0.device)
        return self.p_losses(x_0, t, noise, self.drop_labels(y))
        # END SOLUTION

    # ------------------------------------------------------------------
    # Algorithm 2 with guidance and thresholding
    # ------------------------------------------------------------------

    def guided_noise(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, w: float) -> torch.Tensor:
        """Part 2. Classifier-free guidance (Ho & Salimans 2022, eq. 6).

            eps_bar = (1 + w) * model(x_t, t, y) - w * model(x_t, t, null)      null = K for every example

        Compute both predictions with ONE network call on a batch of 2B (x and t repeated, labels
        y then the null labels): one large batch uses the hardware better than two small ones
        (bench/bench_guidance.py measures it). At w = 0, eps_bar is the conditional prediction
        alone, so one call on B suffices.

        Args:
            x: [B, C, H, W], x_t.
            t: [B] long time steps.
            y: [B] long labels in 0..K.
            w: the guidance weight, a float (0: conditional model, no guidance).
        Returns:
            eps_bar: [B, C, H, W].
        """
        # BEGIN SOLUTION
        if w == 0:
            return self.model(x, t, y)
        null = torch.full_like(y, self.null_label)
        eps = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        eps_cond, eps_uncond = eps.chunk(2)
        return (1 + w) * eps_cond - w * eps_uncond
        # END SOLUTION

    def threshold(self, x0_hat: torch.Tensor, method: str) -> torch.Tensor:
        """Part 2. Keep the predicted clean image x0_hat in the data range [-1, 1].

            "none":     x0_hat unchanged
            "static":   clamp(x0_hat, -1, 1)                                   (Part 1's choice)
            "dynamic":  per example b (Saharia et al. 2022, Imagen):
                        s_b    = max(1, quantile(|x0_hat[b]|, p))   over b's C*H*W values,
                                 p = self.dynamic_quantile (0.995), torch.quantile's default
                                 (linear) interpolation
                        x0_hat[b] <- clamp(x0_hat[b], -s_b, s_b) / s_b

        Args:
            x0_hat: [B, C, H, W], the predicted x_0.
            method: "none", "static" or "dynamic".
        Returns:
            [B, C, H, W].
        """
        if method not in THRESHOLDS:
            raise ValueError(f"threshold must be one of {', '.join(THRESHOLDS)}, got {method!r}")
        # BEGIN SOLUTION
        if method == "none":
            return x0_hat
        if method == "static":
            return x0_hat.clamp(-1.0, 1.0)
        s = torch.quantile(x0_hat.abs().flatten(1), self.dynamic_quantile, dim=1)  # [B]
        s = s.clamp(min=1.0).reshape(-1, *((1,) * (x0_hat.dim() - 1)))  # s >= 1: images in range stay unchanged
        return x0_hat.clamp(-s, s) / s
        # END SOLUTION

    @torch.no_grad()
    def p_sample(self, x: torch.Tensor, t: torch.Tensor, t_index: int, y: torch.Tensor, w: float = 0.0,
                 threshold: str = "static") -> torch.Tensor:
        """Part 2. One reverse step x_t -> x_{t-1}: Part 1's p_sample with two changes.

            eps_bar = guided_noise(x_t, t, y, w)                      (instead of model(x_t, t))
            x0_hat  = threshold((x_t - sqrt(1 - abar_t) eps_bar) / sqrt(abar_t), threshold)
                                                                      (instead of clamp(..., -1, 1))
            mean, variance and x_{t-1}: exactly as in Part 1 (z from `noise_like`, none at t_index 0)

        Args:
            x: [B, C, H, W], x_t.
            t: [B] long, every entry equal to t_index.
            t_index: the same step as a Python int.
            y: [B] long labels in 0..K.
            w: the guidance weight.
            threshold: "none", "static" or "dynamic".
        Returns:
            x_{t-1}: [B, C, H, W].
        """
        # BEGIN SOLUTION
        eps_bar = self.guided_noise(x, t, y, w)
        sqrt_abar = extract(self.sqrt_alphas_cumprod, t, x.shape)
        sqrt_one_minus_abar = extract(self.sqrt_one_minus_alphas_cumprod, t, x.shape)
        x0_hat = self.threshold((x - sqrt_one_minus_abar * eps_bar) / sqrt_abar, threshold)
        mean = (
            extract(self.posterior_mean_coef_x0, t, x.shape) * x0_hat
            + extract(self.posterior_mean_coef_xt, t, x.shape) * x
        )
        if t_index == 0:
            return mean
        std = extract(self.posterior_variance, t, x.shape).sqrt()
        return mean + std * self.noise_like(x.shape, x.device)
        # END SOLUTION

    @torch.no_grad()
    def p_sample_loop(self, img: torch.Tensor, y: torch.Tensor, w: float = 0.0, threshold: str = "static") -> torch.Tensor:
        """Part 2. Algorithm 2 with labels: Part 1's loop, passing y, w and threshold to every step.

            for t_index = T-1, ..., 0:  x <- p_sample(x, t, t_index, y, w, threshold)

        Args:
            img: [B, C, H, W], x_T.
            y: [B] long labels in 0..K (the same at every step).
            w: the guidance weight.
            threshold: "none", "static" or "dynamic".
        Returns:
            x_0: [B, C, H, W] (in [-1, 1] unless threshold is "none").
        """
        # BEGIN SOLUTION
        batch_size = img.shape[0]
        for t_index in reversed(range(self.num_timesteps)):
            t = torch.full((batch_size,), t_index, device=img.device, dtype=torch.long)
            img = self.p_sample(img, t, t_index, y, w, threshold)
        return img
        # END SOLUTION

    @torch.no_grad()
    def sample(self, y, w: float = 0.0, threshold: str = "static") -> torch.Tensor:
        """Part 2. Generate one image per label: x_T ~ N(0, I), Algorithm 2, map to [0, 1].

            x_T    = noise_like((len(y), C, H, W), device)
            images = (p_sample_loop(x_T, y, w, threshold) + 1) / 2

        Args:
            y: the labels, a list of ints or a [B] integer tensor, in 0..K (K: unconditional);
                validated on the CPU and moved to the buffers' device before your code runs.
            w: the guidance weight.
            threshold: "none", "static" or "dynamic".
        Returns:
            [len(y), C, H, W] in [0, 1] (up to the overshoot that threshold="none" allows), on
            the buffers' device.
        """
        y = self.check_labels(y, self.device)
        if threshold not in THRESHOLDS:
            raise ValueError(f"threshold must be one of {', '.join(THRESHOLDS)}, got {threshold!r}")
        # BEGIN SOLUTION
        shape = (y.shape[0], self.channels, self.image_size, self.image_size)
        img = self.noise_like(shape, self.device)
        return (self.p_sample_loop(img, y, w, threshold) + 1) / 2
        # END SOLUTION
