"""The catalogue of common Part 2 mistakes (ConditionalGaussianDiffusion), for test_conditional.py's feedback.

Each mistake is a wrong version of one student function. `detect` says how the tests recognise it:
"output": its output on the reference inputs is stored in the reference file, and a student whose
output equals it is told `title` and `why`; "message": a check catches it (a spy, a stand-in), and its message contains
`expect`. tests/test_fairness.py checks that every mistake here fails its own function's
tests with that message, and that the correct variants in ALTERNATIVES pass every test.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffusion import ConditionalGaussianDiffusion, extract
from tools.mistakes_format import Catalogue

BOOK = Catalogue(ConditionalGaussianDiffusion)
CATALOGUE, ALTERNATIVES, mistake, alternative = BOOK.mistakes, BOOK.alternatives, BOOK.mistake, BOOK.alternative


# ---------------------------------------------------------------------------------------------
# drop_labels
# ---------------------------------------------------------------------------------------------

DROP = "y'_b = K (the null label) where u_b < p_uncond, else y_b, with u = uniform_like(y.shape, y.device)"


def _null(self, y):
    return torch.full_like(y, self.null_label)


@mistake("drop_labels.comparison_reversed", "drop_labels", "the comparison reversed: labels kept where u < p_uncond",
         f"{DROP}: with u >= p_uncond a label is dropped with probability 1 - p_uncond (90%), not p_uncond.")
def _(self, y):
    u = self.uniform_like(y.shape, y.device)
    return torch.where(u >= self.p_uncond, _null(self, y), y)


@mistake("drop_labels.null_zero", "drop_labels", "the null label written as 0 instead of K",
         f"{DROP}: labels 0..K-1 are real classes, so 0 is class 0; the null label is K = self.null_label.")
def _(self, y):
    u = self.uniform_like(y.shape, y.device)
    return torch.where(u < self.p_uncond, torch.zeros_like(y), y)


@mistake("drop_labels.null_minus_one", "drop_labels", "the null label written as -1 instead of K",
         f"{DROP}: the network's embedding has rows 0..K, and the null label is row K = self.null_label.")
def _(self, y):
    u = self.uniform_like(y.shape, y.device)
    return torch.where(u < self.p_uncond, torch.full_like(y, -1), y)


@mistake("drop_labels.one_decision", "drop_labels", "one dropout decision for the whole batch",
         f"{DROP}: one u per example (shape [B]), so that each label is dropped independently.",
         "message", "one number per example")
def _(self, y):
    u = self.uniform_like((1,), y.device)
    return _null(self, y) if bool(u[0] < self.p_uncond) else y.clone()


@mistake("drop_labels.first_u_for_all", "drop_labels", "the first uniform number used for every example",
         f"{DROP}: compare each u_b with p_uncond, not u_0 for the whole batch.")
def _(self, y):
    u = self.uniform_like(y.shape, y.device)
    return _null(self, y) if bool(u[0] < self.p_uncond) else y.clone()


@mistake("drop_labels.hardcoded_p", "drop_labels", "p_uncond hard-coded as 0.1",
         f"{DROP}, with p_uncond = self.p_uncond (0.1 is only the default).")
def _(self, y):
    u = self.uniform_like(y.shape, y.device)
    return torch.where(u < 0.1, _null(self, y), y)


@mistake("drop_labels.rand", "drop_labels", "the uniform numbers drawn with torch.rand instead of uniform_like",
         f"{DROP}: uniform_like is the seam the grader uses to fix the dropout.", "message", "never called self.uniform_like")
def _(self, y):
    u = torch.rand(y.shape, device=y.device)
    return torch.where(u < self.p_uncond, _null(self, y), y)


@mistake("drop_labels.in_place", "drop_labels", "the labels changed in place",
         f"{DROP}, in a new tensor: y[mask] = K also changes the caller's labels.", "message", "changed the labels it was given")
def _(self, y):
    u = self.uniform_like(y.shape, y.device)
    y[u < self.p_uncond] = self.null_label
    return y


# ---------------------------------------------------------------------------------------------
# p_losses and forward
# ---------------------------------------------------------------------------------------------

LOSS = "loss = mean |noise - model(x_t, t, y)| with x_t = q_sample(x_0, t, noise)"


@mistake("p_losses.no_label", "p_losses", "the network called without the labels",
         f"{LOSS}: the conditional network needs y.", "message", "without the labels y")
def _(self, x_0, t, noise, y):
    return F.l1_loss(self.model(self.q_sample(x_0, t, noise), t), noise)


@mistake("p_losses.drops_again", "p_losses", "labels dropped again inside p_losses",
         f"{LOSS}, with y as given: forward drops the labels once, before p_losses.", "message", "p_losses called uniform_like")
def _(self, x_0, t, noise, y):
    return F.l1_loss(self.model(self.q_sample(x_0, t, noise), t, self.drop_labels(y)), noise)


@mistake("p_losses.mse", "p_losses", "MSE instead of L1", f"{LOSS}: the L1 loss, as in Part 1.")
def _(self, x_0, t, noise, y):
    return F.mse_loss(self.model(self.q_sample(x_0, t, noise), t, y), noise)


@mistake("forward.no_dropout", "forward", "the labels passed to p_losses without dropping them",
         "forward passes p_losses the labels from self.drop_labels(y): without dropout the network never "
         "learns the unconditional prediction that guidance needs.", "message", "without dropping them")
def _(self, x_0, y, noise=None):
    y = self.check_labels(y, x_0.device)
    t = torch.randint(0, self.num_timesteps, (x_0.shape[0],), device=x_0.device)
    return self.p_losses(x_0, t, self.noise_like(x_0.shape, x_0.device) if noise is None else noise, y)


@mistake("forward.one_t_per_batch", "forward", "one t for the whole batch",
         "one t per example: t has shape [B], as in Part 1.", "message", "the same t")
def _(self, x_0, y, noise=None):
    y = self.check_labels(y, x_0.device)
    t = torch.randint(0, self.num_timesteps, (1,), device=x_0.device).expand(x_0.shape[0])
    return self.p_losses(x_0, t, self.noise_like(x_0.shape, x_0.device) if noise is None else noise, self.drop_labels(y))


@mistake("forward.ignores_noise", "forward", "the given noise ignored",
         "eps = noise when it is given, else noise_like(...), as in Part 1.", "message", "ignored the noise")
def _(self, x_0, y, noise=None):
    y = self.check_labels(y, x_0.device)
    t = torch.randint(0, self.num_timesteps, (x_0.shape[0],), device=x_0.device)
    return self.p_losses(x_0, t, self.noise_like(x_0.shape, x_0.device), self.drop_labels(y))


# ---------------------------------------------------------------------------------------------
# guided_noise
# ---------------------------------------------------------------------------------------------

CFG = "eps_bar = (1 + w) eps(x_t, t, y) - w eps(x_t, t, null), null = K"


def _both(self, x, t, y, null_value=None):
    null = torch.full_like(y, self.null_label if null_value is None else null_value)
    return self.model(x, t, y), self.model(x, t, null)


@mistake("guided_noise.scale_convention", "guided_noise", "w used as the guidance scale: eps_u + w (eps_c - eps_u)",
         f"{CFG}: this homework's w is the CFG paper's, so the conditional term's weight is 1 + w "
         "(eps_u + w (eps_c - eps_u) is the scale convention s = 1 + w, one weight lower).")
def _(self, x, t, y, w):
    eps_c, eps_u = _both(self, x, t, y)
    return eps_u + w * (eps_c - eps_u)


@mistake("guided_noise.w_for_one_plus_w", "guided_noise", "w instead of 1 + w on the conditional prediction",
         f"{CFG}: the conditional prediction is weighted by 1 + w, so that w = 0 gives the conditional model.")
def _(self, x, t, y, w):
    eps_c, eps_u = _both(self, x, t, y)
    return w * eps_c - w * eps_u


@mistake("guided_noise.conditional_twice", "guided_noise", "the conditional prediction used twice",
         f"{CFG}: the second term is the unconditional prediction, with the null label; (1 + w) eps_c - w eps_c = eps_c.")
def _(self, x, t, y, w):
    eps_c = self.model(x, t, y)
    return (1 + w) * eps_c - w * eps_c


@mistake("guided_noise.signs_swapped", "guided_noise", "the conditional and unconditional predictions swapped",
         f"{CFG}: (1 + w) multiplies the prediction for y, w the one for the null label.")
def _(self, x, t, y, w):
    eps_c, eps_u = _both(self, x, t, y)
    return (1 + w) * eps_u - w * eps_c


@mistake("guided_noise.null_zero", "guided_noise", "the null label written as 0 instead of K",
         f"{CFG}: label 0 is class 0; the null label is K = self.null_label.")
def _(self, x, t, y, w):
    eps_c, eps_u = _both(self, x, t, y, null_value=0)
    return (1 + w) * eps_c - w * eps_u


@mistake("guided_noise.drops_labels", "guided_noise", "label dropout applied at sampling time",
         f"{CFG}: label dropout (drop_labels) is for training only; sampling uses y and the null label as they are.",
         "message", "dropout is for training only")
def _(self, x, t, y, w):
    eps_c, eps_u = _both(self, x, t, self.drop_labels(y))
    return (1 + w) * eps_c - w * eps_u


# ---------------------------------------------------------------------------------------------
# threshold
# ---------------------------------------------------------------------------------------------

DYNAMIC = "dynamic: per example, s = max(1, quantile(|x0_hat|, 0.995)), x0_hat <- clamp(x0_hat, -s, s) / s"


def _dynamic(self, x0_hat, *, absolute=True, floor=True, dims="example", clamp=True, divide=True, q=None):
    values = x0_hat.abs() if absolute else x0_hat
    q = self.dynamic_quantile if q is None else q
    if dims == "batch":
        s = torch.quantile(values.flatten(), q).reshape(1, 1, 1, 1)
    elif dims == "channel":
        s = torch.quantile(values.flatten(2), q, dim=2)[:, :, None, None]
    else:
        s = torch.quantile(values.flatten(1), q, dim=1)[:, None, None, None]
    if floor:
        s = s.clamp(min=1.0)
    out = torch.maximum(torch.minimum(x0_hat, s), -s) if clamp else x0_hat
    return out / s if divide else out


def _threshold_mistake(key, title, why, **switches):
    def threshold(self, x0_hat, method):
        if method == "dynamic":
            return _dynamic(self, x0_hat, **switches)
        return x0_hat.clamp(-1, 1) if method == "static" else x0_hat
    BOOK.add(key, "threshold", title, why, {"threshold": threshold})


_threshold_mistake("threshold.whole_batch", "dynamic threshold over the whole batch instead of per example",
                   f"{DYNAMIC}: each image gets its own s, so one saturated image does not dim the others.", dims="batch")
_threshold_mistake("threshold.per_channel", "dynamic threshold per channel instead of per example",
                   f"{DYNAMIC}: one s per image, over all of its C*H*W values (per channel shifts the colours).",
                   dims="channel")
_threshold_mistake("threshold.signed_quantile", "quantile of x0_hat instead of |x0_hat|",
                   f"{DYNAMIC}: s measures how far the values reach on either side, so take the quantile of |x0_hat|.",
                   absolute=False)
_threshold_mistake("threshold.no_floor", "s not floored at 1",
                   f"{DYNAMIC}: with s < 1 an image already inside [-1, 1] would be stretched; max(1, .) leaves it alone.",
                   floor=False)
_threshold_mistake("threshold.no_divide", "clamped to [-s, s] but not divided by s",
                   f"{DYNAMIC}: dividing by s brings the clamped values back into [-1, 1].", divide=False)
_threshold_mistake("threshold.no_clamp", "divided by s without clamping to [-s, s] first",
                   f"{DYNAMIC}: the clamp saturates the 0.5% of values beyond s before the division.", clamp=False)
_threshold_mistake("threshold.max_not_quantile", "s = max |x0_hat| instead of its 0.995 quantile",
                   f"{DYNAMIC}: p = self.dynamic_quantile (0.995), so a few outliers do not set the scale.", q=1.0)


@mistake("threshold.static_01", "threshold", "static thresholding clamps to [0, 1]",
         "static: clamp(x0_hat, -1, 1): images live in [-1, 1] inside the diffusion.")
def _(self, x0_hat, method):
    if method == "dynamic":
        return _dynamic(self, x0_hat)
    return x0_hat.clamp(0, 1) if method == "static" else x0_hat


@mistake("threshold.none_clamps", "threshold", "\"none\" clamps anyway",
         "none: x0_hat unchanged (it is the baseline that shows what thresholding does).")
def _(self, x0_hat, method):
    if method == "dynamic":
        return _dynamic(self, x0_hat)
    return x0_hat.clamp(-1, 1)


# ---------------------------------------------------------------------------------------------
# p_sample, p_sample_loop, sample
# ---------------------------------------------------------------------------------------------

STEP = ("eps_bar = guided_noise(x_t, t, y, w); x0_hat = threshold((x_t - sqrt(1 - abar_t) eps_bar) / sqrt(abar_t), "
        "threshold); then Part 1's posterior mean and variance")


def _step(self, x, t, t_index, y, w, threshold, *, eps=None, x0=None, after=None, last_noise=False, before=False):
    eps = self.guided_noise(x, t, y, w) if eps is None else eps(self, x, t, y, w)
    x_in = self.threshold(x, threshold) if before else x
    raw = (x_in - extract(self.sqrt_one_minus_alphas_cumprod, t, x.shape) * eps) / extract(self.sqrt_alphas_cumprod, t, x.shape)
    x0_hat = self.threshold(raw, threshold) if x0 is None else x0(self, raw, x, threshold)
    mean = extract(self.posterior_mean_coef_x0, t, x.shape) * x0_hat + extract(self.posterior_mean_coef_xt, t, x.shape) * x
    if t_index == 0:
        out = mean + (1 - extract(self.alphas, t, x.shape)).sqrt() * self.noise_like(x.shape, x.device) if last_noise else mean
    else:
        out = mean + extract(self.posterior_variance, t, x.shape).sqrt() * self.noise_like(x.shape, x.device)
    return after(self, out, threshold) if after else out


def _p_sample_mistake(key, title, why, detect="output", expect="", **switches):
    def p_sample(self, x, t, t_index, y, w=0.0, threshold="static"):
        with torch.no_grad():
            return _step(self, x, t, t_index, y, w, threshold, **switches)
    BOOK.add(key, "p_sample", title, why, {"p_sample": p_sample}, detect, expect)


_p_sample_mistake("p_sample.thresholds_x_t", "x_t thresholded instead of x0_hat",
                  f"{STEP}: thresholding keeps the predicted clean image in range; x_t is noisy and is meant "
                  "to reach beyond [-1, 1].", "message", "threshold was given x_t",
                  x0=lambda self, raw, x, method: raw + 0 * self.threshold(x, method))
_p_sample_mistake("p_sample.clips_x_prev", "x_{t-1} thresholded instead of x0_hat",
                  f"{STEP}: clipping x_{{t-1}} cuts off the noise the next steps need; threshold x0_hat before the mean.",
                  "message", "threshold was given something other than x0_hat",
                  x0=lambda self, raw, x, method: raw, after=lambda self, out, method: self.threshold(out, method))
_p_sample_mistake("p_sample.no_guidance", "the network called directly instead of guided_noise",
                  f"{STEP}: without guided_noise, w has no effect.", "message", "never called self.guided_noise",
                  eps=lambda self, x, t, y, w: self.model(x, t, y))
_p_sample_mistake("p_sample.static_clamp", "x0_hat clamped as in Part 1 instead of thresholded with the chosen method",
                  f"{STEP}: threshold(x0_hat, threshold) applies the method asked for.", "message", "never called self.threshold",
                  x0=lambda self, raw, x, method: raw.clamp(-1, 1))
_p_sample_mistake("p_sample.w_dropped", "guided_noise called with w = 0 instead of the given w",
                  f"{STEP}: pass p_sample's own w on.", "message", "guided_noise got w =",
                  eps=lambda self, x, t, y, w: self.guided_noise(x, t, y, 0.0))
_p_sample_mistake("p_sample.noise_at_last_step", "noise added at the last step",
                  "At t_index = 0 the step returns the mean alone, as in Part 1 (no sqrt(beta_t) z term).", last_noise=True)


def _loop_mistake(key, title, why, detect="message", expect="", order=None, keep=("y", "w", "threshold")):
    def p_sample_loop(self, img, y, w=0.0, threshold="static"):
        x = img
        steps = order(self.num_timesteps) if order else range(self.num_timesteps - 1, -1, -1)
        kwargs = {k: v for k, v in (("w", w), ("threshold", threshold)) if k in keep}
        with torch.no_grad():
            for t_index in steps:
                t = torch.full((img.shape[0],), t_index, device=img.device, dtype=torch.long)
                x = self.p_sample(x, t, t_index, y, **kwargs)
        return x
    BOOK.add(key, "p_sample_loop", title, why, {"p_sample_loop": p_sample_loop}, detect, expect)


LOOP = "for t_index = T-1, ..., 0: x = p_sample(x, t, t_index, y, w, threshold)"
_loop_mistake("p_sample_loop.drops_w", "w not passed on to p_sample",
              f"{LOOP}: without w every step samples at p_sample's default w = 0.", expect="p_sample got w =",
              keep=("y", "threshold"))
_loop_mistake("p_sample_loop.drops_threshold", "threshold not passed on to p_sample",
              f"{LOOP}: without it every step uses the default, static.", expect="p_sample got threshold =",
              keep=("y", "w"))
_loop_mistake("p_sample_loop.forwards", "time running forwards", f"{LOOP}: the reverse process starts at T-1.",
              detect="output", order=lambda T: range(T))


SAMPLE = "images = (p_sample_loop(x_T, y, w, threshold) + 1) / 2 with x_T = noise_like((len(y), C, H, W), device)"


def _sample_mistake(key, title, why, detect="message", expect="", shape=None, finish=None, keep=("w", "threshold")):
    def sample(self, y, w=0.0, threshold="static"):
        y = self.check_labels(y, self.device)
        size = (y.shape[0] if shape is None else shape(self, y), self.channels, self.image_size, self.image_size)
        kwargs = {k: v for k, v in (("w", w), ("threshold", threshold)) if k in keep}
        with torch.no_grad():
            x_0 = self.p_sample_loop(self.noise_like(size, self.device), y, **kwargs)
        return finish(x_0) if finish else (x_0 + 1) / 2
    BOOK.add(key, "sample", title, why, {"sample": sample}, detect, expect)


_sample_mistake("sample.one_per_class", "x_T drawn for num_classes images instead of one per label",
                f"{SAMPLE}: one image per entry of y.", expect="x_T needs (B, C, H, W)",
                shape=lambda self, y: self.num_classes)
_sample_mistake("sample.no_map", "results in [-1, 1] instead of [0, 1]", f"{SAMPLE}.", expect="instead of [0, 1]",
                finish=lambda x: x)
_sample_mistake("sample.drops_w", "w not passed on to p_sample_loop", f"{SAMPLE}.", expect="p_sample_loop got w =",
                keep=("threshold",))


# ---------------------------------------------------------------------------------------------
# Correct variants: each must pass every test
# ---------------------------------------------------------------------------------------------


@alternative("masked_fill", "drop_labels")
def _(self, y):
    return y.masked_fill(self.uniform_like(y.shape, y.device) < self.p_uncond, self.null_label)


@alternative("clone_and_assign", "drop_labels")
def _(self, y):
    out = y.clone()
    out[self.uniform_like(y.shape, y.device) < self.p_uncond] = self.null_label
    return out


@alternative("two_calls", "guided_noise")
def _(self, x, t, y, w):
    eps_c, eps_u = _both(self, x, t, y)
    return (1 + w) * eps_c - w * eps_u


@alternative("null_first_no_shortcut", "guided_noise")
def _(self, x, t, y, w):
    null = torch.full_like(y, self.null_label)
    eps_u, eps_c = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([null, y])).chunk(2)
    return eps_c + w * (eps_c - eps_u)


@alternative("amax_and_where", "threshold")
def _(self, x0_hat, method):
    if method == "none":
        return x0_hat
    if method == "static":
        return torch.clamp(x0_hat, min=-1, max=1)
    flat = x0_hat.reshape(x0_hat.shape[0], -1).abs()
    s = torch.quantile(flat, self.dynamic_quantile, dim=1, keepdim=True)
    s = torch.where(s < 1, torch.ones_like(s), s).reshape(-1, 1, 1, 1)
    return torch.max(torch.min(x0_hat, s), -s) / s


@alternative("keyword_calls", "p_sample")
def _(self, x, t, t_index, y, w=0.0, threshold="static"):
    with torch.no_grad():
        eps = self.guided_noise(x=x, t=t, y=y, w=w)
        abar = extract(self.alphas_cumprod, t, x.shape)
        x0_hat = self.threshold(x0_hat=(x - (1 - abar).sqrt() * eps) / abar.sqrt(), method=threshold)
        abar_prev, alpha = extract(self.alphas_cumprod_prev, t, x.shape), extract(self.alphas, t, x.shape)
        mean = (abar_prev.sqrt() * (1 - alpha) * x0_hat + alpha.sqrt() * (1 - abar_prev) * x) / (1 - abar)
        if t_index == 0:
            return mean
        var = (1 - abar_prev) / (1 - abar) * (1 - alpha)
        return mean + var.sqrt() * self.noise_like(x.shape, device=x.device)


@alternative("keyword_calls", "p_sample_loop")
def _(self, img, y, w=0.0, threshold="static"):
    x = img
    with torch.no_grad():
        for t_index in range(self.num_timesteps - 1, -1, -1):
            t = torch.full_like(y, t_index, dtype=torch.long, device=img.device)
            x = self.p_sample(x=x, t=t, t_index=t_index, y=y, w=w, threshold=threshold)
    return x


@alternative("keyword_calls", "sample")
def _(self, y, w=0.0, threshold="static"):
    y = self.check_labels(y, self.device)
    x_T = self.noise_like(shape=(len(y), self.channels, self.image_size, self.image_size), device=self.device)
    with torch.no_grad():
        return self.p_sample_loop(img=x_T, y=y, w=w, threshold=threshold).add(1).div(2)


@alternative("in_place_map", "sample")
def _(self, y, w=0.0, threshold="static"):
    y = self.check_labels(y, self.device)
    img = self.noise_like((y.shape[0], self.channels, self.image_size, self.image_size), self.device)
    out = self.p_sample_loop(img, y, w, threshold)
    return out.add_(1).mul_(0.5)


@alternative("copy_into_x", "p_sample_loop")
def _(self, img, y, w=0.0, threshold="static"):
    x = img.clone()
    with torch.no_grad():
        for i in reversed(range(self.num_timesteps)):
            x.copy_(self.p_sample(x, torch.full_like(y, i), i, y, w, threshold))
    return x


@alternative("own_loop_in_sample", "sample")
def _(self, y, w=0.0, threshold="static"):
    y = self.check_labels(y, self.device)
    x = self.noise_like((len(y), self.channels, self.image_size, self.image_size), self.device)
    for i in range(self.num_timesteps - 1, -1, -1):
        t = torch.full((len(y),), i, dtype=torch.long, device=x.device)
        x = self.p_sample(x, t, i, y, w=w, threshold=threshold)
    return (x + 1) / 2


@alternative("arithmetic_mask", "drop_labels")
def _(self, y):
    keep = (self.uniform_like(y.shape, y.device) >= self.p_uncond).long()
    return y * keep + self.null_label * (1 - keep)


@alternative("lerp", "guided_noise")
def _(self, x, t, y, w):
    eps_c, eps_u = _both(self, x, t, y)
    return torch.lerp(eps_u, eps_c, 1 + w)


@alternative("multinomial_t", "forward")
def _(self, x_0, y, noise=None):
    y = self.check_labels(y, x_0.device)
    t = torch.multinomial(torch.ones(self.num_timesteps, device=x_0.device), len(x_0), replacement=True)
    noise = self.noise_like(x_0.shape, x_0.device) if noise is None else noise
    return self.p_losses(x_0, t, noise, y=self.drop_labels(y))


@alternative("in_place_step", "p_sample")
def _(self, x, t, t_index, y, w=0.0, threshold="static"):
    with torch.no_grad():
        x0_hat = x - extract(self.sqrt_one_minus_alphas_cumprod, t, x.shape) * self.guided_noise(x, t, y, w)
        x0_hat = self.threshold(x0_hat.div_(extract(self.sqrt_alphas_cumprod, t, x.shape)), threshold)
        out = extract(self.posterior_mean_coef_x0, t, x.shape) * x0_hat
        out.addcmul_(extract(self.posterior_mean_coef_xt, t, x.shape), x)
        if t_index > 0:
            out.addcmul_(extract(self.posterior_variance, t, x.shape).sqrt(), self.noise_like(x.shape, x.device))
        return out
