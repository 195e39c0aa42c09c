"""The stand-ins the parts' tests use instead of the real networks, and the spies Parts 1 and 2 share.

The networks are tiny and deterministic, with elementwise arithmetic only, so CPU and CUDA agree to
float32 rounding (a convolution could run in TF32 on a GPU) and the expected values do not change
when unet.py or the energy CNN does. Each checks how it is called and says what is wrong.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from grading import GradingError, dtype_name, is_fake_mode
from grading.seams import bind, spy


def _local_mix(mix: torch.Tensor, spatial: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """mix @ x per pixel  +  spatial * (x shifted right - x shifted down): [B, C, H, W] -> [B, C, H, W]."""
    h = (mix[None, :, :, None, None] * x[:, None]).sum(2)
    return h + spatial[None, :, None, None] * (x.roll(1, -1) - x.roll(1, -2))


class StandInModel(nn.Module):
    """A tiny deterministic noise predictor, class-conditional when num_classes is given:

        eps_hat = tanh(mix @ x_t + spatial * (x_t shifted right - x_t shifted down) + shift[t] (+ label[y])) * gain[t]

    x_t: [B, C, H, W]; t: [B] long; y: [B] long in 0..K. `shift` and `gain` are [T, C] and `label` is
    [K + 1, C] (the null label K included): a wrong t or label gives a visibly different prediction.
    Each example is computed on its own, so one call on 2B equals two calls on B.
    """

    def __init__(self, channels: int, timesteps: int, num_classes: int | None = None):
        super().__init__()
        self.mix = nn.Parameter(torch.eye(channels))
        self.spatial = nn.Parameter(torch.zeros(channels))
        self.shift = nn.Parameter(torch.zeros(timesteps, channels))
        self.gain = nn.Parameter(torch.ones(timesteps, channels))
        if num_classes is not None:
            self.label = nn.Parameter(torch.zeros(num_classes + 1, channels))
        self.label_devices: dict[str, str] = {}  # on the stand-in GPU: where the labels it was given live

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self._check_call(x_t, t, y)
        h = _local_mix(self.mix, self.spatial, x_t) + self.shift[t][:, :, None, None]
        if hasattr(self, "label"):
            h = h + self.label[y][:, :, None, None]
        return torch.tanh(h) * self.gain[t][:, :, None, None]

    def _check_call(self, x_t, t, y) -> None:
        timesteps, channels = self.shift.shape
        if not isinstance(x_t, torch.Tensor) or x_t.dim() != 4 or x_t.shape[1] != channels:
            got = list(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__
            raise GradingError(f"the model was called with x_t = {got}; it takes a [B, {channels}, H, W] image batch")
        if x_t.dtype != self.mix.dtype:
            raise GradingError(
                f"the model was called with a {dtype_name(x_t)} x_t, but the network's weights are {dtype_name(self.mix)}: "
                "keep x_t in float32 (the U-Net would fail here)")
        if hasattr(self, "label"):
            self._check_labels(x_t, t, y)
            return
        if not isinstance(t, torch.Tensor):
            raise GradingError(f"the model was called with t = {t!r}; it takes t as a [B] long tensor, one step per image")
        if t.dtype != torch.long:
            raise GradingError(f"the model was called with t of dtype {dtype_name(t)}; time steps are integer indexes (torch.long)")
        if t.dim() != 1 or t.shape[0] != x_t.shape[0]:
            raise GradingError(f"the model was called with t of shape {list(t.shape)}; it needs [B] = [{x_t.shape[0]}], one step per image")
        if t.device != x_t.device:
            raise GradingError(f"the model was called with t on {t.device} but x_t on {x_t.device}; put t on x_t's device")
        if t.numel() and not is_fake_mode():  # the stand-in GPU has no values to read
            if int(t.min()) < 0 or int(t.max()) >= timesteps:
                raise GradingError(
                    f"the model was called with t = {int(t.min())}..{int(t.max())}, outside 0..T-1 = 0..{timesteps - 1} "
                    "(time is 0-indexed in this code: index i is the slides' t = i + 1)")

    def _check_labels(self, x_t, t, y) -> None:
        timesteps, null, batch = self.shift.shape[0], self.label.shape[0] - 1, x_t.shape[0]
        for name, value in (("t", t), ("y", y)):
            if value is None:
                raise GradingError("the model was called without the labels y: call self.model(x_t, t, y)")
            if not isinstance(value, torch.Tensor) or value.dtype != torch.long or value.shape != (batch,):
                got = f"{dtype_name(value)} {list(value.shape)}" if isinstance(value, torch.Tensor) else repr(value)
                raise GradingError(f"the model was called with {name} = {got}; it takes {name} as a [B] = [{batch}] "
                                   "long tensor, one per image (x_t, t and y must have the same batch size)")
            if is_fake_mode():
                self.label_devices.setdefault(f"the labels passed to the model ({name})", str(value.device))
            elif value.device != x_t.device:
                raise GradingError(f"the model was called with {name} on {value.device} but x_t on {x_t.device}")
        if is_fake_mode():
            return
        if int(t.min()) < 0 or int(t.max()) >= timesteps:
            raise GradingError(f"the model was called with t = {int(t.min())}..{int(t.max())}, outside 0..T-1 = "
                               f"0..{timesteps - 1}")
        if int(y.min()) < 0 or int(y.max()) > null:
            raise GradingError(f"the model was called with labels {int(y.min())}..{int(y.max())}, outside 0..K = "
                               f"0..{null}: classes are 0..K-1 and the null label is K = self.null_label")


class StandInEnergy(nn.Module):
    """A tiny deterministic energy:

        E(x) = sum over channels and pixels of  scale * tanh(mix @ x + spatial * (x shifted right - x shifted
               down) + shift) + curvature / 2 * x^2

    x: [B, C, H, W] -> E: [B]. `mix` is [C, C]; `spatial`, `shift`, `scale` and `curvature` are [C].
    """

    def __init__(self, channels: int):
        super().__init__()
        self.mix = nn.Parameter(torch.eye(channels) * 0.8)
        self.spatial = nn.Parameter(torch.full((channels,), 0.3))
        self.shift = nn.Parameter(torch.full((channels,), 0.1))
        self.scale = nn.Parameter(torch.ones(channels))
        self.curvature = nn.Parameter(torch.full((channels,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = self.mix.shape[0]
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != channels:
            got = f"a tensor of shape {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise GradingError(f"the energy network was called with {got}; it takes a [B, {channels}, H, W] batch")
        if x.dtype != self.mix.dtype:
            raise GradingError(f"the energy network was called with a {dtype_name(x)} x, but its weights are "
                               f"{dtype_name(self.mix)}: keep x in float32")

        def per_channel(v):
            return v[None, :, None, None]

        h = _local_mix(self.mix, self.spatial, x) + per_channel(self.shift)
        e = per_channel(self.scale) * torch.tanh(h) + 0.5 * per_channel(self.curvature) * x * x
        return e.flatten(1).sum(1)


def images(config: dict, seed: int, device: torch.device, low: float = -1.0) -> torch.Tensor:
    """A fixed [B, C, size, size] batch, uniform on [low, -low)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (config["B"], config["C"], config["size"], config["size"])
    return (torch.rand(shape, generator=generator) * (-2 * low) + low).to(device)


# ----------------------------------------------------------------------------
# Spies for the diffusion parts: each replaces a student function with a fixed stand-in
# ----------------------------------------------------------------------------


def step_stand_in(x: torch.Tensor, t_index) -> torch.Tensor:
    """What the p_sample spy returns: a fixed map per step into (-1, 1), so that order and chaining show
    in the result and x_0 is a valid image (clamping it changes nothing)."""
    return torch.tanh(x) * 0.9 + 0.1 * math.sin(int(t_index) + 1)


def chain(img: torch.Tensor, timesteps: int) -> torch.Tensor:
    """What the p_sample_loop spy returns: the p_sample spy for t_index = T-1, ..., 0, so that a sample
    that runs its own loop over self.p_sample gets the same x_0 as one that calls self.p_sample_loop."""
    for t_index in range(timesteps - 1, -1, -1):
        img = step_stand_in(img, t_index)
    return img


def spy_p_sample(diffusion, names: tuple[str, ...], defaults: dict | None = None) -> list[dict]:
    def p_sample(bound: dict, k: int) -> torch.Tensor:
        if not isinstance(bound["x"], torch.Tensor):
            raise GradingError(f"passed x = {type(bound['x']).__name__} to p_sample; pass the current image tensor")
        try:
            return step_stand_in(bound["x"], bound["t_index"])
        except (TypeError, ValueError, RuntimeError):
            raise GradingError(f"passed t_index = {bound['t_index']!r} to p_sample; pass the loop counter, an int") from None
    return spy(diffusion, "p_sample", names, p_sample, defaults)


def spy_p_sample_loop(diffusion, names: tuple[str, ...], defaults: dict | None = None) -> list[dict]:
    def p_sample_loop(bound: dict, k: int) -> torch.Tensor:
        if not isinstance(bound["img"], torch.Tensor):
            raise GradingError(f"passed {type(bound['img']).__name__} to p_sample_loop; pass x_T, a tensor")
        return chain(bound["img"], diffusion.num_timesteps)
    return spy(diffusion, "p_sample_loop", names, p_sample_loop, defaults)


def spy_p_losses(diffusion, names: tuple[str, ...], device: torch.device) -> list[dict]:
    """p_losses returns a known scalar per call."""
    where = device if not is_fake_mode() else torch.device("meta")
    return spy(diffusion, "p_losses", names, lambda bound, k: torch.tensor(0.123 + k, device=where))


def spy_q_sample(diffusion, args: list | None, x_t: torch.Tensor) -> None:
    """p_losses is checked on its own: q_sample is replaced by a spy that returns the right x_t (so a bug in
    q_sample costs nothing there) and checks that it gets p_losses' own x_0, t and noise."""
    def q_sample(*a, **k):
        bound = bind("q_sample", ("x_0", "t", "noise"), a, k)
        for name, given in zip(("x_0", "t", "noise"), args or ()):
            got = bound[name]
            if not (isinstance(got, torch.Tensor) and got.shape == given.shape and torch.equal(got.cpu(), given.cpu())):
                raise GradingError(f"called q_sample with another {name} than the one it was given; "
                                   "make x_t with self.q_sample(x_0, t, noise)")
        return x_t.clone()

    diffusion.q_sample = q_sample


# ----------------------------------------------------------------------------
# Part 3: fixed energy weights, and spies for the Langevin chain
# ----------------------------------------------------------------------------


def energy_weights(channels: int) -> dict:
    """Fixed non-trivial StandInEnergy weights for the property tests."""
    generator = torch.Generator().manual_seed(channels)
    return {"mix": torch.randn(channels, channels, generator=generator) * 0.6,
            "spatial": torch.randn(channels, generator=generator) * 0.4,
            "shift": torch.randn(channels, generator=generator) * 0.5,
            "scale": torch.rand(channels, generator=generator) + 0.5,
            "curvature": torch.rand(channels, generator=generator) * 0.8 + 0.2}


def langevin_stand_in(x: torch.Tensor) -> torch.Tensor:
    """What the langevin_step spy returns: a fixed map into (-1, 1), so that chaining shows."""
    return torch.tanh(2 * x + 0.3)


def langevin_chain(x: torch.Tensor, steps: int) -> torch.Tensor:
    """What the langevin_sample spy returns: `steps` runs of the langevin_step spy (so that code running its
    own loop over self.langevin_step gets the same samples as code calling self.langevin_sample)."""
    for _ in range(steps):
        x = langevin_stand_in(x)
    return x


def spy_langevin(model) -> dict[str, list[dict]]:
    """Spies for langevin_sample and langevin_step that agree with each other."""
    return {"langevin_sample": spy(model, "langevin_sample", ("x", "steps"),
                                   lambda bound, k: langevin_chain(bound["x"], bound["steps"])),
            "langevin_step": spy(model, "langevin_step", ("x",), lambda bound, k: langevin_stand_in(bound["x"]))}
