"""Regenerate the reference tensors that test_diffusion.py checks against (instructors only).

    python tools/make_reference.py              # data/reference/public.pt, shipped with the handout
    python tools/make_reference.py --hidden     # tools/reference/hidden.pt, for the autograder only
    python tools/make_reference.py --hidden --seed 7 --out /tmp/hidden.pt   # another hidden set

Each case stores every input (arguments, the stand-in model's weights, the tensors `noise_like`
returns), the solution's output, and the outputs of the common mistakes below on the same inputs,
so that test_diffusion.py can name a mistake when a student's output equals one of them. The
solution is diffusion.py itself (the code between BEGIN/END SOLUTION). Run on the CPU: the
outputs are then reproducible to float32 rounding, which tests/test_reference.py checks.
The hidden set uses other seeds and shapes, so echoing the public outputs cannot pass it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402  (test_diffusion reports failures as pytest outcomes)

import test_diffusion as td  # noqa: E402
from diffusion import GaussianDiffusion, extract  # noqa: E402

FORMAT = 1
OUTPUTS = {"public": ROOT / "data" / "reference" / "public.pt", "hidden": ROOT / "tools" / "reference" / "hidden.pt"}
# A mistake's output is stored for a case only when it is clearly different from the right one there.
DISTINCT = 1e-3


# ----------------------------------------------------------------------------
# The cases. t / t_index chosen to cover 0, 1, T-1 and mixed batches; two or more
# image sizes, channels 1 and 3, and a T other than 50 (catches a hard-coded 50).
# ----------------------------------------------------------------------------

def _case(name, B, C, size, T, **extra):
    return dict(name=name, B=B, C=C, size=size, T=T, **extra)


SETS = {
    "public": dict(seed=1234, cases={
        "q_sample": [
            _case("t_mixed", 6, 3, 8, 50, t=[0, 1, 49, 17, 30, 5]),
            _case("t_0", 2, 1, 16, 50, t=[0, 0]),
            _case("t_1", 3, 3, 8, 50, t=[1, 1, 1]),
            _case("t_last", 2, 1, 8, 50, t=[49, 49]),
            _case("t_mixed", 4, 3, 12, 10, t=[9, 0, 4, 1]),
        ],
        "p_losses": [
            _case("t_mixed", 6, 3, 8, 50, t=[3, 49, 0, 1, 22, 40]),
            _case("t_0", 2, 1, 16, 50, t=[0, 0]),
            _case("t_1", 3, 3, 8, 50, t=[1, 1, 1]),
            _case("t_last", 2, 3, 8, 50, t=[49, 49]),
            _case("t_mixed", 4, 1, 12, 10, t=[0, 9, 1, 5]),
        ],
        "p_sample": [
            _case("t_index_0", 3, 3, 8, 50, t_index=0),
            _case("t_index_1", 2, 1, 16, 50, t_index=1),
            _case("t_index_last", 2, 3, 8, 50, t_index=49),
            _case("t_index_mid", 2, 3, 12, 50, t_index=25),
            _case("t_index_last", 3, 1, 8, 10, t_index=9),
            _case("t_index_0", 2, 3, 8, 10, t_index=0),
        ],
        "p_sample_loop": [_case("all_steps", 2, 3, 8, 50), _case("all_steps", 3, 1, 12, 10)],
        "sample": [_case("end_to_end", 2, 3, 8, 50), _case("end_to_end", 2, 1, 12, 10)],
    }),
    "hidden": dict(seed=987654, cases={
        "q_sample": [
            _case("t_mixed", 5, 3, 6, 50, t=[49, 2, 0, 33, 1]),
            _case("t_0", 3, 3, 10, 50, t=[0, 0, 0]),
            _case("t_1", 2, 1, 6, 50, t=[1, 1]),
            _case("t_last", 3, 3, 4, 20, t=[19, 19, 19]),
            _case("t_mixed", 7, 1, 10, 13, t=[12, 6, 0, 1, 3, 9, 11]),
        ],
        "p_losses": [
            _case("t_mixed", 5, 3, 10, 50, t=[7, 0, 49, 1, 28]),
            _case("t_0", 3, 1, 6, 50, t=[0, 0, 0]),
            _case("t_1", 2, 3, 4, 20, t=[1, 1]),
            _case("t_last", 4, 1, 10, 50, t=[49, 49, 49, 49]),
            _case("t_mixed", 7, 3, 6, 13, t=[12, 0, 5, 1, 8, 2, 10]),
        ],
        "p_sample": [
            _case("t_index_0", 4, 3, 6, 50, t_index=0),
            _case("t_index_1", 3, 3, 10, 50, t_index=1),
            _case("t_index_last", 3, 1, 6, 50, t_index=49),
            _case("t_index_mid", 2, 3, 10, 20, t_index=11),
            _case("t_index_last", 2, 3, 4, 13, t_index=12),
            _case("t_index_0", 5, 1, 6, 20, t_index=0),
        ],
        "p_sample_loop": [_case("all_steps", 3, 3, 6, 50), _case("all_steps", 2, 1, 10, 13)],
        "sample": [_case("end_to_end", 3, 3, 6, 50), _case("end_to_end", 2, 1, 4, 20)],
    }),
}


# ----------------------------------------------------------------------------
# The catalogue of common mistakes. `detect` says how test_diffusion.py recognises it:
# "output": its output on the reference inputs is stored, and the message names `title`;
# "spy": the spy checks catch it, and their message contains `expect`.
# ----------------------------------------------------------------------------

@dataclass
class Mistake:
    key: str
    function: str
    title: str
    why: str
    methods: dict
    detect: str = "output"
    expect: str = ""
    extra: dict = field(default_factory=dict)

    def diffusion_class(self) -> type:
        return type(f"Mistake_{self.key.replace('.', '_')}", (GaussianDiffusion,), dict(self.methods))


CATALOGUE: list[Mistake] = []


def mistake(key, function, title, why, detect="output", expect=""):
    def register(method):
        CATALOGUE.append(Mistake(key, function, title, why, {function: method}, detect, expect))
        return method
    return register


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
         "spy", "another noise than the one it was given")
def _(self, x_0, t, noise):
    noise = self.noise_like(x_0.shape, x_0.device)
    return F.l1_loss(self.model(self.q_sample(x_0, t, noise), t), noise)


@mistake("forward.randint_exclusive", "forward", "t drawn from 0..T-2 (randint's upper bound is exclusive)",
         "t ~ Uniform{0, ..., T-1}: torch.randint(0, T, ...) already stops at T-1.", "spy", "never took the value T-1")
def _(self, x_0, noise=None):
    t = torch.randint(0, self.num_timesteps - 1, (x_0.shape[0],), device=x_0.device)
    return self.p_losses(x_0, t, self.noise_like(x_0.shape, x_0.device) if noise is None else noise)


@mistake("forward.one_indexed", "forward", "t drawn from 1..T (the slides' 1-indexed time)",
         "t ~ Uniform{0, ..., T-1} in code.", "spy", "outside 0..T-1")
def _(self, x_0, noise=None):
    t = torch.randint(1, self.num_timesteps + 1, (x_0.shape[0],), device=x_0.device)
    return self.p_losses(x_0, t, self.noise_like(x_0.shape, x_0.device) if noise is None else noise)


@mistake("forward.hardcoded_T", "forward", "T hard-coded as 50",
         "t ~ Uniform{0, ..., T-1} with T = self.num_timesteps.", "spy", "outside 0..T-1")
def _(self, x_0, noise=None):
    t = torch.randint(0, 50, (x_0.shape[0],), device=x_0.device)
    return self.p_losses(x_0, t, self.noise_like(x_0.shape, x_0.device) if noise is None else noise)


@mistake("forward.one_t_per_batch", "forward", "one t for the whole batch",
         "one t per example: t has shape [B].", "spy", "the same t")
def _(self, x_0, noise=None):
    t = torch.randint(0, self.num_timesteps, (1,), device=x_0.device).expand(x_0.shape[0])
    return self.p_losses(x_0, t, self.noise_like(x_0.shape, x_0.device) if noise is None else noise)


@mistake("forward.float_t", "forward", "t drawn as floats",
         "t is a [B] long tensor of step indexes.", "spy", "dtype float32")
def _(self, x_0, noise=None):
    t = torch.rand(x_0.shape[0], device=x_0.device) * self.num_timesteps
    return self.p_losses(x_0, t, self.noise_like(x_0.shape, x_0.device) if noise is None else noise)


@mistake("forward.randn", "forward", "noise drawn with torch.randn instead of noise_like",
         "eps = self.noise_like(x_0.shape, x_0.device).", "spy", "never called self.noise_like")
def _(self, x_0, noise=None):
    t = torch.randint(0, self.num_timesteps, (x_0.shape[0],), device=x_0.device)
    return self.p_losses(x_0, t, torch.randn_like(x_0) if noise is None else noise)


@mistake("forward.ignores_noise", "forward", "the given noise ignored",
         "eps = noise when it is given, else noise_like(...).", "spy", "ignored the noise")
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
    CATALOGUE.append(Mistake(key, "p_sample", title, why, {"p_sample": p_sample}, detect, expect))


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
         "z = self.noise_like(x.shape, x.device).", "spy", "noise_like was called 0 times")
def _(self, x, t, t_index):
    with torch.no_grad():
        mean = _step(self, x, t, 0)
        if t_index == 0:
            return mean
        return mean + extract(self.posterior_variance, t, x.shape).sqrt() * torch.randn_like(x)


@mistake("p_sample.int_t_to_model", "p_sample", "the model called with the int t_index instead of the tensor t",
         "eps_hat = model(x_t, t) with t a [B] long tensor.", "spy", "[B] long tensor")
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
    CATALOGUE.append(Mistake(key, "p_sample_loop", title, why, {"p_sample_loop": p_sample_loop}, detect, expect))


LOOP = "for t_index = T-1, ..., 0: x = p_sample(x, t, t_index)"
_loop_mistake("p_sample_loop.forwards", "time running forwards", f"{LOOP}: the reverse process starts at T-1.",
              order=lambda T: range(T))
_loop_mistake("p_sample_loop.skips_last", "the last step (t_index 0) skipped", f"{LOOP}: range(T-1, -1, -1) includes 0.",
              order=lambda T: range(T - 1, 0, -1))
_loop_mistake("p_sample_loop.skips_first", "the first step (t_index T-1) skipped", f"{LOOP}: start at t_index = T-1.",
              order=lambda T: range(T - 2, -1, -1))
_loop_mistake("p_sample_loop.one_indexed", "t_index running T..1 (the slides' 1-indexed time)",
              f"{LOOP}: in code the steps are 0-indexed.", "spy", "T..1", order=lambda T: range(T, 0, -1))
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
    CATALOGUE.append(Mistake(key, "sample", title, why, {"sample": sample}, detect, expect))


_sample_mistake("sample.no_map", "results in [-1, 1] instead of [0, 1]", f"{SAMPLE}.", finish=lambda x: x)
_sample_mistake("sample.clamp_01", "x_0 clamped to [0, 1] instead of mapped", f"{SAMPLE}: clamping loses the negative half.",
                finish=lambda x: x.clamp(0, 1))
_sample_mistake("sample.inverse_map", "the map 2x - 1 used instead of (x + 1) / 2",
                f"{SAMPLE}: 2x - 1 maps [0, 1] to [-1, 1], the other direction.", finish=lambda x: 2 * x - 1)
_sample_mistake("sample.randn", "x_T drawn with torch.randn instead of noise_like", f"{SAMPLE}.",
                finish=lambda x: (x + 1) / 2, draw=lambda self, shape: torch.randn(shape, device=self.device),
                detect="spy", expect="never called self.noise_like")
_sample_mistake("sample.channels_last", "x_T shaped (B, H, W, C)", f"{SAMPLE}: images are channels-first.",
                finish=lambda x: (x + 1) / 2,
                draw=lambda self, shape: self.noise_like((shape[0], shape[2], shape[3], shape[1]), self.device),
                detect="spy", expect="x_T needs (B, C, H, W)")


# ----------------------------------------------------------------------------
# Building a reference set
# ----------------------------------------------------------------------------

def _stand_in_weights(channels: int, timesteps: int, generator: torch.Generator) -> dict:
    return {
        "mix": torch.randn(channels, channels, generator=generator) * 0.7,
        "spatial": torch.randn(channels, generator=generator) * 0.5,
        "shift": torch.randn(timesteps, channels, generator=generator) * 0.7,
        "gain": torch.rand(timesteps, channels, generator=generator) * 0.8 + 0.6,
    }


def _make_case(function: str, spec: dict, generator: torch.Generator) -> dict:
    B, C, size, T = spec["B"], spec["C"], spec["size"], spec["T"]
    shape = (B, C, size, size)

    def randn():
        return torch.randn(shape, generator=generator)

    x_0 = torch.rand(shape, generator=generator) * 2 - 1
    label = f"B={B}, C={C}, {size}x{size}, T={T}"
    if function in ("q_sample", "p_losses"):
        t = torch.tensor(spec["t"], dtype=torch.long)
        assert t.shape == (B,) and int(t.max()) < T
        args, draws, label = [x_0, t, randn()], [], f"{label}, t = {spec['t']}"
    elif function == "p_sample":
        t_index = spec["t_index"]
        args = [randn(), torch.full((B,), t_index, dtype=torch.long), t_index]
        draws, label = ([randn()] if t_index > 0 else []), f"{label}, t_index = {t_index}"
    elif function == "p_sample_loop":
        args, draws = [randn()], [randn() for _ in range(T - 1)]
    else:
        args, draws = [B], [randn() for _ in range(T)]
    needed = len(draws)
    draws += [randn(), randn()]  # spares: what an implementation that draws too often gets
    return {
        "id": f"{spec['name']}-B{B}-C{C}-{size}x{size}-T{T}",
        "label": label,
        "config": {"image_size": size, "channels": C, "timesteps": T},
        "model": _stand_in_weights(C, T, generator),
        "args": args,
        "noise_like": draws,
        "noise_like_calls": needed,
    }


def _output(diffusion_class, case: dict):
    """Run a case as test_diffusion.py does; None if it raises."""
    try:
        out, _ = td._run_case(diffusion_class, case)
    except pytest.fail.Exception:
        return None
    return out.detach().cpu() if isinstance(out, torch.Tensor) else None


def build(name: str, seed: int | None = None) -> dict:
    """The reference dict for set `name` ("public" or "hidden"); checks it before returning it."""
    if td.DEVICE.type != "cpu":
        raise SystemExit("make_reference: generate on the CPU (unset DIFFUSION_TEST_DEVICE)")
    spec = SETS[name]
    seed = spec["seed"] if seed is None else seed
    reference = {
        "format": FORMAT, "name": name, "seed": seed, "made_with_torch": str(torch.__version__),
        "mistakes": {m.key: {"function": m.function, "title": m.title, "why": m.why, "detect": m.detect}
                     for m in CATALOGUE},
        "cases": {},
    }
    mutants = [(m, m.diffusion_class()) for m in CATALOGUE if m.detect == "output"]
    for k, function in enumerate(td.FUNCTIONS):
        reference["cases"][function] = []
        for i, case_spec in enumerate(spec["cases"].get(function, [])):
            generator = torch.Generator().manual_seed(seed * 1000 + k * 100 + i)
            case = _make_case(function, case_spec, generator)
            case["function"], case["reference"] = function, reference
            if function == "p_losses":  # p_losses is judged on its own: its tests hand it the right x_t
                config = case["config"]
                solution = td._build(GaussianDiffusion, config["channels"], config["image_size"], config["timesteps"])
                case["q_sample_returns"] = solution.q_sample(*case["args"]).detach()
            expected = _output(GaussianDiffusion, case)
            if expected is None:
                raise SystemExit(f"make_reference: the solution fails on {function} [{case['id']}]")
            case["expected"], case["mistakes"] = expected, {}
            for m, mutant in mutants:
                out = _output(mutant, case)
                if out is not None and (out.shape != expected.shape
                                        or (out.double() - expected.double()).abs().max() > DISTINCT):
                    case["mistakes"][m.key] = out
            reference["cases"][function].append(case)
    _check(reference)
    for cases in reference["cases"].values():
        for case in cases:
            del case["function"], case["reference"]
    return reference


def _check(reference: dict) -> None:
    """The solution passes every check; every output mistake is recorded for its own function."""
    failures = {k: v for k, v in td.run_checks(GaussianDiffusion, reference).items() if v}
    if failures:
        raise SystemExit("make_reference: the solution fails test_diffusion.py:\n" + "\n".join(failures.values()))
    for m in CATALOGUE:
        if m.detect == "output" and not any(m.key in c["mistakes"] for c in reference["cases"][m.function]):
            raise SystemExit(f"make_reference: mistake {m.key} gives the right output on every {m.function} case; "
                             "add a case where it differs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", action="store_true", help="write the hidden (autograder) set instead of the public one")
    parser.add_argument("--seed", type=int, default=None, help="another seed for the inputs (default: the set's own)")
    parser.add_argument("--out", type=Path, default=None, help="output file (default: data/reference/public.pt or "
                                                                  "tools/reference/hidden.pt)")
    args = parser.parse_args(argv)
    name = "hidden" if args.hidden else "public"
    out = args.out or OUTPUTS[name]
    reference = build(name, args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(reference, tmp)
    tmp.replace(out)  # atomic: a crash never leaves half a file
    cases = sum(len(c) for c in reference["cases"].values())
    stored = sum(len(c["mistakes"]) for cs in reference["cases"].values() for c in cs)
    print(f"wrote {out} ({name} set, seed {reference['seed']}): {cases} cases, {stored} stored mistake outputs, "
          f"{out.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
