"""The catalogue of common mistakes in the six functions (instructors only).

Each Mistake is a GaussianDiffusion subclass with one function written wrong. tools/make_reference.py
stores the output of every "output" mistake on each reference case, so that test_diffusion.py can
name it when a student's output equals it; tests/test_fairness.py checks that every mistake
fails its own function's tests (and only the tests of that function and of those that call it),
with a message that names it: its `title` ("output") or the phrase `expect` ("message").
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from diffusion import GaussianDiffusion, extract  # the solution (the repository root is on sys.path)
from tools.mistakes_format import Catalogue

# ----------------------------------------------------------------------------
# The catalogue of common mistakes. `detect` says how test_diffusion.py recognises it:
# "output": its output on the reference inputs is stored, and the message names `title`;
# "message": a check catches it (a spy, the stand-in GPU, a second call...), and its message contains `expect`.
# ----------------------------------------------------------------------------

BOOK = Catalogue(GaussianDiffusion)
CATALOGUE, ALTERNATIVES, mistake, alternative = BOOK.mistakes, BOOK.alternatives, BOOK.mistake, BOOK.alternative


Q_SAMPLE = "x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps"


@mistake("q_sample.alpha_for_alphabar", "q_sample", "alpha_t used where alpha-bar_t belongs",
         f"{Q_SAMPLE} needs the cumulative product abar_t = alpha_1 ... alpha_t (self.alphas_cumprod), not alpha_t (self.alphas).")
def _(self, x_0, t, noise):
    a = extract(self.alphas, t, x_0.shape)
    return a.sqrt() * x_0 + (1 - a).sqrt() * noise


@mistake("q_sample.no_sqrt", "q_sample", "square roots missing",
         f"{Q_SAMPLE}: the coefficients are the square roots of abar_t and 1 - abar_t (the standard deviations, not the variances).")
def _(self, x_0, t, noise):
    a = extract(self.alphas_cumprod, t, x_0.shape)
    return a * x_0 + (1 - a) * noise


@mistake("q_sample.no_sqrt_on_noise", "q_sample", "variance 1 - abar_t used as the noise's scale",
         f"{Q_SAMPLE}: the noise is scaled by the standard deviation sqrt(1 - abar_t), not by the variance 1 - abar_t.")
def _(self, x_0, t, noise):
    a = extract(self.alphas_cumprod, t, x_0.shape)
    return a.sqrt() * x_0 + (1 - a) * noise


@mistake("q_sample.swapped", "q_sample", "the two coefficients swapped",
         f"{Q_SAMPLE}: sqrt(abar_t) multiplies the image and sqrt(1 - abar_t) the noise (at t = 0, x_t is almost x_0).")
def _(self, x_0, t, noise):
    a = extract(self.alphas_cumprod, t, x_0.shape)
    return (1 - a).sqrt() * x_0 + a.sqrt() * noise


@mistake("q_sample.one_minus_sqrt", "q_sample", "1 - sqrt(abar_t) written for sqrt(1 - abar_t)",
         f"{Q_SAMPLE}: the noise's scale is sqrt(1 - abar_t), the square root of the whole difference.")
def _(self, x_0, t, noise):
    a = extract(self.alphas_cumprod, t, x_0.shape)
    return a.sqrt() * x_0 + (1 - a.sqrt()) * noise


@mistake("q_sample.t_minus_one", "q_sample", "time shifted by one: alphas_cumprod[t - 1]",
         f"{Q_SAMPLE} with abar_t = alphas_cumprod[t]: index i already holds the slides' t = i + 1 "
         "(and [t - 1] wraps around to the last entry at t = 0).")
def _(self, x_0, t, noise):
    a = self.alphas_cumprod[t - 1].reshape(-1, 1, 1, 1)
    return a.sqrt() * x_0 + (1 - a).sqrt() * noise


@mistake("q_sample.no_noise", "q_sample", "the noise term left out",
         f"{Q_SAMPLE}: x_t is the scaled image plus sqrt(1 - abar_t) times the noise.")
def _(self, x_0, t, noise):
    return extract(self.alphas_cumprod, t, x_0.shape).sqrt() * x_0


LOSS = "loss = mean |eps - model(x_t, t)|, averaged over every element"


@mistake("p_losses.mse", "p_losses", "MSE instead of L1",
         f"{LOSS}: this homework trains with the L1 loss (F.l1_loss), not the squared error.")
def _(self, x_0, t, noise):
    return F.mse_loss(self.model(self.q_sample(x_0, t, noise), t), noise)


@mistake("p_losses.x0_target", "p_losses", "regressing x_0 instead of the noise",
         f"{LOSS}: the network predicts the noise eps that made x_t, so the target is `noise`, not x_0.")
def _(self, x_0, t, noise):
    return F.l1_loss(self.model(self.q_sample(x_0, t, noise), t), x_0)


@mistake("p_losses.xt_target", "p_losses", "comparing the prediction with x_t",
         f"{LOSS}: the target is the noise eps, not the noisy image x_t.")
def _(self, x_0, t, noise):
    x_t = self.q_sample(x_0, t, noise)
    return F.l1_loss(self.model(x_t, t), x_t)


@mistake("p_losses.sum", "p_losses", "sum instead of mean",
         f"{LOSS}: take the mean over batch, channels and pixels (a sum grows with the batch and image size).")
def _(self, x_0, t, noise):
    return (self.model(self.q_sample(x_0, t, noise), t) - noise).abs().sum()


@mistake("p_losses.sum_per_image", "p_losses", "summed over each image's pixels, then averaged over the batch",
         f"{LOSS}: average over every element, pixels and channels included, not only over the batch.")
def _(self, x_0, t, noise):
    return (self.model(self.q_sample(x_0, t, noise), t) - noise).abs().flatten(1).sum(1).mean()


@mistake("p_losses.no_abs", "p_losses", "absolute value missing",
         f"{LOSS}: without |.| positive and negative errors cancel out.")
def _(self, x_0, t, noise):
    return (noise - self.model(self.q_sample(x_0, t, noise), t)).mean()


@mistake("p_losses.model_on_x0", "p_losses", "the model called on x_0 instead of x_t",
         f"{LOSS}: the network sees the noisy x_t = q_sample(x_0, t, noise) and predicts its noise.")
def _(self, x_0, t, noise):
    return F.l1_loss(self.model(x_0, t), noise)


@mistake("p_losses.own_noise", "p_losses", "new noise drawn instead of the `noise` argument",
         f"{LOSS}, where eps is the `noise` argument: forward draws the noise, p_losses uses it.",
         "message", "another noise than the one it was given")
def _(self, x_0, t, noise):
    noise = self.noise_like(x_0.shape, x_0.device)
    return F.l1_loss(self.model(self.q_sample(x_0, t, noise), t), noise)


@mistake("forward.randint_exclusive", "forward", "t drawn from 0..T-2 (randint's upper bound is exclusive)",
         "t ~ Uniform{0, ..., T-1}: torch.randint(0, T, ...) already stops at T-1.", "message", "never took the value T-1")
def _(self, x_0, noise=None):
    t = torch.randint(0, self.num_timesteps - 1, (x_0.shape[0],), device=x_0.device)
    return self.p_losses(x_0, t, self.noise_like(x_0.shape, x_0.device) if noise is None else noise)


@mistake("forward.one_indexed", "forward", "t drawn from 1..T (the slides' 1-indexed time)",
         "t ~ Uniform{0, ..., T-1} in code.", "message", "outside 0..T-1")
def _(self, x_0, noise=None):
    t = torch.randint(1, self.num_timesteps + 1, (x_0.shape[0],), device=x_0.device)
    return self.p_losses(x_0, t, self.noise_like(x_0.shape, x_0.device) if noise is None else noise)


@mistake("forward.hardcoded_T", "forward", "T hard-coded as 50",
         "t ~ Uniform{0, ..., T-1} with T = self.num_timesteps.", "message", "outside 0..T-1")
def _(self, x_0, noise=None):
    t = torch.randint(0, 50, (x_0.shape[0],), device=x_0.device)
    return self.p_losses(x_0, t, self.noise_like(x_0.shape, x_0.device) if noise is None else noise)


@mistake("forward.one_t_per_batch", "forward", "one t for the whole batch",
         "one t per example: t has shape [B].", "message", "the same t")
def _(self, x_0, noise=None):
    t = torch.randint(0, self.num_timesteps, (1,), device=x_0.device).expand(x_0.shape[0])
    return self.p_losses(x_0, t, self.noise_like(x_0.shape, x_0.device) if noise is None else noise)


@mistake("forward.float_t", "forward", "t drawn as floats",
         "t is a [B] long tensor of step indexes.", "message", "dtype float32")
def _(self, x_0, noise=None):
    t = torch.rand(x_0.shape[0], device=x_0.device) * self.num_timesteps
    return self.p_losses(x_0, t, self.noise_like(x_0.shape, x_0.device) if noise is None else noise)


@mistake("forward.randn", "forward", "noise drawn with torch.randn instead of noise_like",
         "eps = self.noise_like(x_0.shape, x_0.device).", "message", "never called self.noise_like")
def _(self, x_0, noise=None):
    t = torch.randint(0, self.num_timesteps, (x_0.shape[0],), device=x_0.device)
    return self.p_losses(x_0, t, torch.randn_like(x_0) if noise is None else noise)


@mistake("forward.ignores_noise", "forward", "the given noise ignored",
         "eps = noise when it is given, else noise_like(...).", "message", "ignored the noise")
def _(self, x_0, noise=None):
    t = torch.randint(0, self.num_timesteps, (x_0.shape[0],), device=x_0.device)
    return self.p_losses(x_0, t, self.noise_like(x_0.shape, x_0.device))


def _step(self, x, t, t_index, *, clamp=True, x0_buffer="alphas_cumprod", x0_sqrt=True, prev=None,
          swap=False, variance=None, as_std=True, last_noise=False, noise=True):
    """Algorithm 2's step with switches, to build its mistakes from."""
    eps = self.model(x, t)
    abar_x0 = extract(getattr(self, x0_buffer), t, x.shape)
    if x0_sqrt:
        x0_hat = (x - (1 - abar_x0).sqrt() * eps) / abar_x0.sqrt()
    else:
        x0_hat = (x - (1 - abar_x0) * eps) / abar_x0
    if clamp:
        x0_hat = x0_hat.clamp(-1, 1)
    alpha, abar = extract(self.alphas, t, x.shape), extract(self.alphas_cumprod, t, x.shape)
    abar_prev = prev(self, t, x.shape) if prev else extract(self.alphas_cumprod_prev, t, x.shape)
    coef_x0 = abar_prev.sqrt() * (1 - alpha) / (1 - abar)
    coef_xt = alpha.sqrt() * (1 - abar_prev) / (1 - abar)
    if swap:
        coef_x0, coef_xt = coef_xt, coef_x0
    mean = coef_x0 * x0_hat + coef_xt * x
    var = (1 - abar_prev) / (1 - abar) * (1 - alpha) if variance is None else variance(alpha, abar, abar_prev)
    if t_index == 0 and last_noise:
        return mean + (1 - alpha).sqrt() * self.noise_like(x.shape, x.device)
    if t_index == 0 or not noise:
        return mean
    return mean + (var.sqrt() if as_std else var) * self.noise_like(x.shape, x.device)


def _p_sample_mistake(key, title, why, detect="output", expect="", **switches):
    def p_sample(self, x, t, t_index):
        with torch.no_grad():
            return _step(self, x, t, t_index, **switches)
    BOOK.add(key, "p_sample", title, why, {"p_sample": p_sample}, detect, expect)


X0_HAT = "x0_hat = clamp((x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t), -1, 1)"
MEAN = "mean = sqrt(abar_{t-1}) (1 - alpha_t) / (1 - abar_t) x0_hat + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t"
VARIANCE = "variance = (1 - abar_{t-1}) / (1 - abar_t) (1 - alpha_t), and x_{t-1} = mean + sqrt(variance) z"

_p_sample_mistake("p_sample.no_clamp", "x0-hat not clamped to [-1, 1]",
                  f"{X0_HAT}: the clamp keeps the predicted image in the data range (the form "
                  "1/sqrt(alpha_t) (x_t - (1 - alpha_t)/sqrt(1 - abar_t) eps_hat) is this same unclamped mean).", clamp=False)
_p_sample_mistake("p_sample.noise_at_last_step", "noise added at the last step",
                  "At t_index = 0 Algorithm 2 returns the mean alone: x_0 = mean, no sigma z term.", last_noise=True)
_p_sample_mistake("p_sample.no_noise", "no noise added at t_index > 0",
                  f"{VARIANCE} with z = noise_like(...) for every step but the last.", noise=False)
_p_sample_mistake("p_sample.variance_as_std", "the variance used as the standard deviation",
                  f"{VARIANCE}: z is scaled by the square root of the variance.", as_std=False)
_p_sample_mistake("p_sample.abar_for_abar_prev", "alpha-bar_t used where alpha-bar_{t-1} belongs",
                  f"{MEAN}; {VARIANCE}: abar_{{t-1}} is alphas_cumprod_prev (abar_{{-1}} = 1), one step before abar_t.",
                  prev=lambda self, t, shape: extract(self.alphas_cumprod, t, shape))
_p_sample_mistake("p_sample.prev_wraps", "alpha-bar_{t-1} read as alphas_cumprod[t - 1], which wraps around at t = 0",
                  "abar_{t-1} = 1 at the first step (t_index 0); alphas_cumprod[-1] is abar_T instead. "
                  "Use alphas_cumprod_prev, which is padded with 1.",
                  prev=lambda self, t, shape: self.alphas_cumprod[t - 1].reshape(shape[0], 1, 1, 1))
_p_sample_mistake("p_sample.beta_variance", "beta_t = 1 - alpha_t used as the variance",
                  f"{VARIANCE}: this homework uses the posterior variance, not beta_t.",
                  variance=lambda alpha, abar, abar_prev: 1 - alpha)
_p_sample_mistake("p_sample.swapped_mean", "the two coefficients of the posterior mean swapped",
                  f"{MEAN}: the coefficient with sqrt(abar_{{t-1}}) multiplies x0_hat.", swap=True)
_p_sample_mistake("p_sample.alpha_in_x0_hat", "alpha_t used where alpha-bar_t belongs in x0-hat",
                  f"{X0_HAT}: undoing q(x_t | x_0) needs the cumulative abar_t (alphas_cumprod).", x0_buffer="alphas")
_p_sample_mistake("p_sample.x0_hat_no_sqrt", "square roots missing in x0-hat",
                  f"{X0_HAT}: divide by sqrt(abar_t) and scale eps_hat by sqrt(1 - abar_t).", x0_sqrt=False)


@mistake("p_sample.randn", "p_sample", "noise drawn with torch.randn instead of noise_like",
         "z = self.noise_like(x.shape, x.device).", "message", "noise_like was called 0 times")
def _(self, x, t, t_index):
    with torch.no_grad():
        mean = _step(self, x, t, 0)
        if t_index == 0:
            return mean
        return mean + extract(self.posterior_variance, t, x.shape).sqrt() * torch.randn_like(x)


@mistake("p_sample.int_t_to_model", "p_sample", "the model called with the int t_index instead of the tensor t",
         "eps_hat = model(x_t, t) with t a [B] long tensor.", "message", "[B] long tensor")
def _(self, x, t, t_index):
    with torch.no_grad():
        return _step(self, x, t_index, t_index)


def _loop(self, img, order=None, feed=True, fixed_t=None, to_01=False):
    x = img
    for t_index in (order if order is not None else range(self.num_timesteps - 1, -1, -1)):
        step = t_index if fixed_t is None else fixed_t(self)
        t = torch.full((img.shape[0],), step, device=img.device, dtype=torch.long)
        x = self.p_sample(x if feed else img, t, t_index)
    return (x + 1) / 2 if to_01 else x


def _loop_mistake(key, title, why, detect="output", expect="", **switches):
    def p_sample_loop(self, img):
        kwargs = dict(switches)
        if callable(kwargs.get("order")):
            kwargs["order"] = kwargs["order"](self.num_timesteps)
        with torch.no_grad():
            return _loop(self, img, **kwargs)
    BOOK.add(key, "p_sample_loop", title, why, {"p_sample_loop": p_sample_loop}, detect, expect)


LOOP = "for t_index = T-1, ..., 0: x = p_sample(x, t, t_index)"
_loop_mistake("p_sample_loop.forwards", "time running forwards", f"{LOOP}: the reverse process starts at T-1.",
              order=lambda T: range(T))
_loop_mistake("p_sample_loop.skips_last", "the last step (t_index 0) skipped", f"{LOOP}: range(T-1, -1, -1) includes 0.",
              order=lambda T: range(T - 1, 0, -1))
_loop_mistake("p_sample_loop.skips_first", "the first step (t_index T-1) skipped", f"{LOOP}: start at t_index = T-1.",
              order=lambda T: range(T - 2, -1, -1))
_loop_mistake("p_sample_loop.one_indexed", "t_index running T..1 (the slides' 1-indexed time)",
              f"{LOOP}: in code the steps are 0-indexed.", "message", "T..1", order=lambda T: range(T, 0, -1))
_loop_mistake("p_sample_loop.t_fixed", "t built once before the loop", f"{LOOP} with t filled with the current t_index.",
              fixed_t=lambda self: self.num_timesteps - 1)
_loop_mistake("p_sample_loop.no_feedback", "every step restarted from x_T",
              f"{LOOP}: each step continues from the previous step's output.", feed=False)
_loop_mistake("p_sample_loop.maps_to_01", "x_0 mapped to [0, 1] inside p_sample_loop",
              "p_sample_loop returns x_0 in [-1, 1]; sample maps it with (x_0 + 1) / 2.", to_01=True)


SAMPLE = "images = (p_sample_loop(x_T) + 1) / 2 with x_T = noise_like((B, C, H, W), device)"


def _sample_mistake(key, title, why, finish=None, draw=None, detect="output", expect=""):
    def sample(self, batch_size):
        shape = (batch_size, self.channels, self.image_size, self.image_size)
        with torch.no_grad():
            img = draw(self, shape) if draw else self.noise_like(shape, self.device)
            return finish(self.p_sample_loop(img))
    BOOK.add(key, "sample", title, why, {"sample": sample}, detect, expect)


_sample_mistake("sample.no_map", "results in [-1, 1] instead of [0, 1]", f"{SAMPLE}.", finish=lambda x: x)
_sample_mistake("sample.clamp_01", "x_0 clamped to [0, 1] instead of mapped", f"{SAMPLE}: clamping loses the negative half.",
                finish=lambda x: x.clamp(0, 1))
_sample_mistake("sample.inverse_map", "the map 2x - 1 used instead of (x + 1) / 2",
                f"{SAMPLE}: 2x - 1 maps [0, 1] to [-1, 1], the other direction.", finish=lambda x: 2 * x - 1)
_sample_mistake("sample.randn", "x_T drawn with torch.randn instead of noise_like", f"{SAMPLE}.",
                finish=lambda x: (x + 1) / 2, draw=lambda self, shape: torch.randn(shape, device=self.device),
                detect="message", expect="never called self.noise_like")
_sample_mistake("sample.channels_last", "x_T shaped (B, H, W, C)", f"{SAMPLE}: images are channels-first.",
                finish=lambda x: (x + 1) / 2,
                draw=lambda self, shape: self.noise_like((shape[0], shape[2], shape[3], shape[1]), self.device),
                detect="message", expect="x_T needs (B, C, H, W)")


# ----------------------------------------------------------------------------
# Mistakes caught by the checks around the arithmetic: errors, gradients, global state,
# repeated calls and the stand-in GPU.
# ----------------------------------------------------------------------------


@mistake("q_sample.unreshaped_index", "q_sample", "a schedule value indexed with t and not reshaped",
         "self.alphas_cumprod[t] has shape [B]; extract(a, t, x.shape) makes it [B, 1, 1, 1].",
         "message", "extract(a, t, x.shape), which reshapes it to [B, 1, 1, 1]")
def _(self, x_0, t, noise):
    return self.alphas_cumprod[t].sqrt() * x_0 + (1 - self.alphas_cumprod[t]).sqrt() * noise


@mistake("q_sample.default_dtype", "q_sample", "torch's default dtype changed",
         "A function must leave torch's global settings as it found them.", "message", "the default dtype to float64")
def _(self, x_0, t, noise):
    torch.set_default_dtype(torch.float64)
    return GaussianDiffusion.q_sample(self, x_0, t, noise)


@mistake("p_losses.no_grad", "p_losses", "the loss computed under torch.no_grad()",
         "The right value without a gradient: training would not learn.", "message", "the loss has no gradient")
def _(self, x_0, t, noise):
    with torch.no_grad():
        return F.l1_loss(self.model(self.q_sample(x_0, t, noise), t), noise)


@mistake("forward.reseeds", "forward", "torch.manual_seed called in forward",
         "The same t at every training step.", "message", "a new seed for torch's random generator")
def _(self, x_0, noise=None):
    torch.manual_seed(0)
    return GaussianDiffusion.forward(self, x_0, noise)


@mistake("forward.t_on_cpu", "forward", "t drawn without device=",
         "torch.randint(0, T, (B,)) lives on the CPU: a crash on a GPU.", "message", "t was created on cpu")
def _(self, x_0, noise=None):
    t = torch.randint(0, self.num_timesteps, (x_0.shape[0],))
    return self.p_losses(x_0, t, self.noise_like(x_0.shape, x_0.device) if noise is None else noise)


@mistake("p_sample.cached_noise", "p_sample", "the noise drawn once and kept on self",
         "z is new at every step.", "message", "noise kept on self")
def _(self, x, t, t_index):
    with torch.no_grad():
        mean = GaussianDiffusion.p_sample(self, x, t, 0)
        if t_index == 0:
            return mean
        if getattr(self, "_z", None) is None or self._z.shape != x.shape:
            self._z = self.noise_like(x.shape, x.device)
        return mean + extract(self.posterior_variance, t, x.shape).sqrt() * self._z


@mistake("p_sample.noise_on_cpu", "p_sample", "z drawn on the CPU",
         "z = self.noise_like(x.shape, x.device).", "message", "found at least two devices")
def _(self, x, t, t_index):
    with torch.no_grad():
        mean = GaussianDiffusion.p_sample(self, x, t, 0)
        if t_index == 0:
            return mean
        return mean + extract(self.posterior_variance, t, x.shape).sqrt() * self.noise_like(x.shape, "cpu")


@mistake("p_sample_loop.t_on_cpu", "p_sample_loop", "t built with torch.full and no device=",
         "t lives on the CPU: a crash on a GPU.", "message", "t was created on cpu")
def _(self, img):
    with torch.no_grad():
        for t_index in reversed(range(self.num_timesteps)):
            img = self.p_sample(img, torch.full((img.shape[0],), t_index, dtype=torch.long), t_index)
        return img


@mistake("sample.noise_on_cpu", "sample", "x_T drawn on the CPU",
         "x_T = self.noise_like(shape, self.device).", "message", "x_T was created on cpu")
def _(self, batch_size):
    with torch.no_grad():
        img = self.noise_like((batch_size, self.channels, self.image_size, self.image_size), "cpu")
        return (self.p_sample_loop(img) + 1) / 2


# ----------------------------------------------------------------------------
# Correct variants, in styles other than the solution's: each must pass every test
# ----------------------------------------------------------------------------


@alternative("in_place_map", "sample")
def _(self, batch_size):
    img = self.noise_like((batch_size, self.channels, self.image_size, self.image_size), self.device)
    out = self.p_sample_loop(img)
    return out.add_(1).mul_(0.5)


@alternative("copy_into_x", "p_sample_loop")
def _(self, img):
    x = img.clone()
    with torch.no_grad():
        for i in reversed(range(self.num_timesteps)):
            t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
            x.copy_(self.p_sample(x, t, i))
    return x


@alternative("own_loop_in_sample", "sample")
def _(self, batch_size):
    x = self.noise_like((batch_size, self.channels, self.image_size, self.image_size), self.device)
    with torch.no_grad():
        for i in range(self.num_timesteps - 1, -1, -1):
            x = self.p_sample(x=x, t=torch.full((batch_size,), i, device=x.device, dtype=torch.long), t_index=i)
    return x.mul(0.5).add(0.5)


@alternative("while_loop_reused_t", "p_sample_loop")
def _(self, img):
    t = torch.empty(img.shape[0], dtype=torch.long, device=img.device)
    t_index, x = self.num_timesteps - 1, img
    while t_index >= 0:
        x = self.p_sample(x, t.fill_(t_index), t_index)  # one t, refilled in place at every step
        t_index -= 1
    return x


@alternative("index_select_and_addcmul", "q_sample")
def _(self, x_0, t, noise):
    sqrt_abar = self.sqrt_alphas_cumprod.index_select(0, t).view(-1, *([1] * (x_0.dim() - 1)))
    sqrt_rest = self.sqrt_one_minus_alphas_cumprod.index_select(0, t).view(-1, *([1] * (x_0.dim() - 1)))
    return torch.addcmul(sqrt_rest * noise, sqrt_abar, x_0)


@alternative("index_select_and_addcmul", "p_losses")
def _(self, x_0, t, noise):
    predicted = self.model(self.q_sample(x_0=x_0, t=t, noise=noise), t)
    return (predicted - noise).abs().sum() / noise.numel()


@alternative("multinomial_t", "forward")
def _(self, x_0, noise=None):
    if noise is None:
        noise = self.noise_like(x_0.shape, device=x_0.device)
    uniform = torch.ones(self.num_timesteps, device=x_0.device)
    t = torch.multinomial(uniform, x_0.shape[0], replacement=True)
    return self.p_losses(x_0, t, noise)


@alternative("in_place_step", "p_sample")
def _(self, x, t, t_index):
    with torch.no_grad():
        x0_hat = x - extract(self.sqrt_one_minus_alphas_cumprod, t, x.shape) * self.model(x, t)
        x0_hat.div_(extract(self.sqrt_alphas_cumprod, t, x.shape)).clamp_(-1, 1)
        out = extract(self.posterior_mean_coef_x0, t, x.shape) * x0_hat
        out.addcmul_(extract(self.posterior_mean_coef_xt, t, x.shape), x)
        if t_index > 0:
            out.addcmul_(extract(self.posterior_variance, t, x.shape).sqrt(), self.noise_like(x.shape, x.device))
        return out


@alternative("recursive_loop", "p_sample_loop")
def _(self, img, t_index=None):
    t_index = self.num_timesteps - 1 if t_index is None else t_index
    if t_index < 0:
        return img
    t = torch.full((img.shape[0],), t_index, dtype=torch.long, device=img.device)
    return self.p_sample_loop(self.p_sample(img, t, t_index), t_index - 1)


# Whole classes, each with its own helpers and algebra.


@BOOK.alternative_class
class OtherAlgebra(GaussianDiffusion):
    """Plain indexing, p_losses without q_sample, x0-hat as sqrt(1/abar) x - sqrt(1/abar - 1) eps,
    abar_{t-1} with torch.where, noise drawn at every step (times a zero std at the last), keyword calls."""

    def q_sample(self, x_0, t, noise):
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return torch.sqrt(abar) * x_0 + torch.sqrt(1.0 - abar) * noise

    def p_losses(self, x_0, t, noise):
        abar = self.alphas_cumprod[t][:, None, None, None]
        x_t = abar.sqrt() * x_0 + (1 - abar).sqrt() * noise
        return (noise - self.model(x_t, t)).abs().mean()

    def forward(self, x_0, noise=None):
        t = (torch.rand(x_0.shape[0], device=x_0.device) * self.num_timesteps).long()
        noise = noise if noise is not None else self.noise_like(shape=x_0.shape, device=x_0.device)
        return self.p_losses(x_0=x_0, t=t, noise=noise)

    @torch.no_grad()
    def p_sample(self, x, t, t_index):
        eps = self.model(x, t)
        alpha, abar = self.alphas[t][:, None, None, None], self.alphas_cumprod[t][:, None, None, None]
        prev = torch.where(t > 0, self.alphas_cumprod[(t - 1).clamp(min=0)], torch.ones_like(self.alphas_cumprod[t]))
        abar_prev = prev[:, None, None, None]
        x0_hat = (torch.sqrt(1 / abar) * x - torch.sqrt(1 / abar - 1) * eps).clamp(-1, 1)
        beta = 1 - alpha
        mean = (abar_prev.sqrt() * beta * x0_hat + alpha.sqrt() * (1 - abar_prev) * x) / (1 - abar)
        variance = beta * (1 - abar_prev) / (1 - abar)
        return mean + variance.sqrt() * self.noise_like(x.shape, x.device)

    @torch.no_grad()
    def p_sample_loop(self, img):
        steps = [img]
        for t_index in range(self.num_timesteps - 1, -1, -1):
            t = torch.tensor([t_index] * img.shape[0]).to(img.device)  # made on the CPU, then moved
            steps.append(self.p_sample(x=steps[-1], t=t, t_index=t_index))
        return steps[-1]

    @torch.no_grad()
    def sample(self, batch_size):
        img = self.noise_like((batch_size, self.channels, self.image_size, self.image_size), device=self.alphas.device)
        return (self.p_sample_loop(img=img) * 0.5 + 0.5).clamp(0, 1)


@BOOK.alternative_class
class Float64(GaussianDiffusion):
    """Every intermediate in float64, cast back at the end; t drawn on the CPU and moved."""

    def _abar(self, t):
        return self.alphas_cumprod.double().gather(0, t).view(-1, 1, 1, 1)

    def q_sample(self, x_0, t, noise):
        abar = self._abar(t)
        return (abar.sqrt() * x_0.double() + (1 - abar).sqrt() * noise.double()).to(x_0.dtype)

    def p_losses(self, x_0, t, noise):
        return F.l1_loss(self.model(self.q_sample(x_0, t, noise), t).double(), noise.double()).float()

    def forward(self, x_0, noise=None):
        t = torch.randint(0, self.num_timesteps, (x_0.shape[0],)).to(x_0.device)
        if noise is None:
            noise = self.noise_like(x_0.shape, x_0.device)
        return self.p_losses(x_0, t, noise)

    @torch.no_grad()
    def p_sample(self, x, t, t_index):
        eps, xd = self.model(x, t).double(), x.double()
        alpha = self.alphas.double().gather(0, t).view(-1, 1, 1, 1)
        abar = self._abar(t)
        abar_prev = self.alphas_cumprod_prev.double().gather(0, t).view(-1, 1, 1, 1)
        x0_hat = ((xd - (1 - abar).sqrt() * eps) / abar.sqrt()).clamp(-1, 1)
        mean = abar_prev.sqrt() * (1 - alpha) / (1 - abar) * x0_hat + alpha.sqrt() * (1 - abar_prev) / (1 - abar) * xd
        if t_index == 0:
            return mean.to(x.dtype)
        std = ((1 - abar_prev) / (1 - abar) * (1 - alpha)).sqrt()
        return (mean + std * self.noise_like(x.shape, x.device).double()).to(x.dtype)

    @torch.no_grad()
    def p_sample_loop(self, img):
        for t_index in reversed(range(self.num_timesteps)):
            img = self.p_sample(img, torch.full((img.shape[0],), t_index, dtype=torch.long).to(img.device), t_index)
        return img

    @torch.no_grad()
    def sample(self, batch_size):
        shape = (batch_size, self.channels, self.image_size, self.image_size)
        return ((self.p_sample_loop(self.noise_like(shape, self.device)).double() + 1) / 2).float()


@BOOK.alternative_class
class SmallDifferences(GaussianDiffusion):
    """Allowed variations: tqdm around the loop, a numpy loop counter, x_0 clamped again at the end of the
    loop (it is already in [-1, 1]), the noise asked for with keyword arguments."""

    @torch.no_grad()
    def p_sample_loop(self, img):
        from tqdm.auto import tqdm
        for t_index in tqdm(np.arange(self.num_timesteps - 1, -1, -1), disable=True):
            t = torch.full((img.shape[0],), t_index, device=img.device, dtype=torch.long)
            img = self.p_sample(img, t, t_index)
        return img.clamp(-1, 1)

    @torch.no_grad()
    def p_sample(self, x, t, t_index):
        mean = super().p_sample(x, t, 0)
        if t_index == 0:
            return mean
        return mean + extract(self.posterior_variance, t, x.shape).sqrt() * self.noise_like(shape=x.shape, device=x.device)


@BOOK.alternative_class
class OwnBuffers(GaussianDiffusion):
    """Its own schedule tensors precomputed in float32 arithmetic, read with torch.gather; inference_mode."""

    def __init__(self, model, image_size, channels=3, timesteps=50):
        super().__init__(model, image_size, channels, timesteps)
        abar = self.alphas_cumprod
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        self.register_buffer("c_x0", abar_prev.sqrt() * (1 - self.alphas) / (1 - abar))
        self.register_buffer("c_xt", self.alphas.sqrt() * (1 - abar_prev) / (1 - abar))
        self.register_buffer("sigma", ((1 - abar_prev) / (1 - abar) * (1 - self.alphas)).sqrt())

    def _at(self, buffer, t):
        return torch.gather(buffer, 0, t).reshape(-1, 1, 1, 1)

    def q_sample(self, x_0, t, noise):
        abar = self._at(self.alphas_cumprod, t)
        return abar ** 0.5 * x_0 + (1 - abar) ** 0.5 * noise

    def p_losses(self, x_0, t, noise):
        return torch.mean(torch.abs(self.model(self.q_sample(x_0, t, noise), t) - noise))

    def forward(self, x_0, noise=None):
        noise = self.noise_like(x_0.shape, x_0.device) if noise is None else noise
        t = torch.randint(self.num_timesteps, size=(len(x_0),), device=x_0.device, dtype=torch.long)
        return self.p_losses(x_0, t, noise)

    @torch.inference_mode()
    def p_sample(self, x, t, t_index):
        abar = self._at(self.alphas_cumprod, t)
        x0_hat = torch.clamp((x - (1 - abar).sqrt() * self.model(x, t)) / abar.sqrt(), min=-1, max=1)
        mean = self._at(self.c_x0, t) * x0_hat + self._at(self.c_xt, t) * x
        if t_index > 0:
            mean = mean + self._at(self.sigma, t) * self.noise_like(x.shape, x.device)
        return mean

    @torch.inference_mode()
    def p_sample_loop(self, img):
        x = img
        for i in range(self.num_timesteps):
            step = self.num_timesteps - 1 - i
            x = self.p_sample(x, torch.ones(img.shape[0], dtype=torch.long, device=img.device) * step, step)
        return x

    @torch.inference_mode()
    def sample(self, batch_size):
        x = self.p_sample_loop(self.noise_like([batch_size, self.channels, self.image_size, self.image_size], self.device))
        return x.add(1).div(2)
