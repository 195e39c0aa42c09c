"""Checks for the six GaussianDiffusion functions you write in diffusion.py.

    pytest test_diffusion.py                 # everything, a few seconds on a laptop CPU
    pytest test_diffusion.py -k p_sample     # the tests of one function (and those named after it)

How the checks work
- A tiny deterministic stand-in noise predictor (`StandInModel` below, not the U-Net) plays
  `model(x_t, t)`, so the expected values do not change when unet.py does.
- `noise_like` is replaced by a fixed sequence of tensors. Every input, every noise tensor,
  the stand-in's weights and every expected output are stored in data/reference/public.pt,
  so the checks never depend on the random number generator of your torch version.
- Where the randomness is yours (the t that `forward` draws), the tests spy on the calls
  instead: what `forward` passes to `p_losses`, which steps `p_sample_loop` runs, in which
  order, and what `sample` feeds the loop.

Reading a failure
Each failure names the function and the case, then says what differs: the largest error,
where it is (example, channel, pixel) and your value next to the expected one. When your
output equals the output of a common mistake stored in the reference file, the message names
the mistake and the equation it breaks. "<name>: not implemented yet" means the function
still raises NotImplementedError. Tolerance: |yours - expected| <= 1e-5 + 1e-5 |expected|.

Environment variables
    DIFFUSION_REFERENCE     another reference file (the autograder's hidden set uses this)
    DIFFUSION_TEST_DEVICE   run on another device, e.g. cuda (default: cpu)
    DIFFUSION_TEST_TIMEOUT  seconds before a test counts as hung (default: 60)
"""

from __future__ import annotations

import inspect
import os
import traceback
from pathlib import Path

import pytest
import torch
from torch import nn

from diffusion import GaussianDiffusion

# An infinite loop in one function fails that test instead of hanging the whole run.
pytestmark = pytest.mark.timeout(float(os.environ.get("DIFFUSION_TEST_TIMEOUT", "60")))

FUNCTIONS = ("q_sample", "p_losses", "forward", "p_sample", "p_sample_loop", "sample")
# End to end, these run your own versions of the functions they call. (p_losses does not:
# its tests hand it the right x_t, so each function is judged on its own.)
DEPENDS_ON = {"p_sample_loop": ("p_sample",), "sample": ("p_sample_loop", "p_sample")}
ATOL = 1e-5
RTOL = 1e-5
DEFAULT_REFERENCE = Path(__file__).resolve().parent / "data" / "reference" / "public.pt"
DEVICE = torch.device(os.environ.get("DIFFUSION_TEST_DEVICE", "cpu"))

# Settings of the spy tests (batch B, channels C, image size, T). The reference tests take their
# cases from the reference file instead. A T other than 50 catches a hard-coded 50.
FORWARD_CONFIGS = {"B5-C3-4x4-T50": dict(B=5, C=3, size=4, T=50), "B3-C1-8x8-T7": dict(B=3, C=1, size=8, T=7)}
T_CONFIGS = {"B4096-T50": dict(B=4096, C=1, size=2, T=50), "B600-T3": dict(B=600, C=1, size=2, T=3)}
LOOP_CONFIGS = {"B2-C3-8x8-T50": dict(B=2, C=3, size=8, T=50), "B3-C1-4x4-T5": dict(B=3, C=1, size=4, T=5)}
SAMPLE_CONFIGS = {"B3-C3-8x8": dict(B=3, C=3, size=8, T=10), "B2-C1-16x16": dict(B=2, C=1, size=16, T=10)}
CONFIGS = {
    "test_forward_uses_given_noise": FORWARD_CONFIGS,
    "test_forward_draws_noise_with_noise_like": FORWARD_CONFIGS,
    "test_forward_draws_t": T_CONFIGS,
    "test_p_sample_loop_steps": LOOP_CONFIGS,
    "test_sample_calls": SAMPLE_CONFIGS,
}


# ----------------------------------------------------------------------------
# The tests, function by function (the machinery they use follows below)
# ----------------------------------------------------------------------------


def test_q_sample(diffusion_class, case):
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise, with t per example (0, 1, T-1 and mixed)."""
    check_reference(diffusion_class, case)


def test_p_losses(diffusion_class, case):
    """mean |noise - model(x_t, t)| with the stand-in model; q_sample is a spy returning the right x_t."""
    check_reference(diffusion_class, case)


def test_forward_uses_given_noise(diffusion_class, config):
    """forward(x_0, noise) passes x_0 and that very noise to p_losses and returns its loss."""
    diffusion = _build(diffusion_class, config["C"], config["size"], config["T"])
    diffusion.noise_like = RecordingNoise()
    calls = _spy_p_losses(diffusion)
    x_0, noise = _images(config, 1), _images(config, 2)
    got = _call("forward", diffusion, x_0.clone(), noise.clone())
    _check_forward_result(got, calls)
    if not torch.equal(calls[0]["x_0"], x_0):
        _fail("forward: the x_0 passed to p_losses is not the x_0 that forward was given")
    if not isinstance(calls[0]["noise"], torch.Tensor) or not torch.equal(calls[0]["noise"], noise):
        _fail("forward ignored the noise it was given: when `noise` is not None, pass it to p_losses unchanged "
              "(this is how the trainer and the grader fix the noise)")


def test_forward_draws_noise_with_noise_like(diffusion_class, config):
    """forward(x_0) draws its noise with self.noise_like(x_0.shape, x_0.device) and uses it."""
    diffusion = _build(diffusion_class, config["C"], config["size"], config["T"])
    noise_like = RecordingNoise()
    diffusion.noise_like = noise_like
    calls = _spy_p_losses(diffusion)
    x_0 = _images(config, 3)
    got = _call("forward", diffusion, x_0)
    _check_forward_result(got, calls)
    if not noise_like.calls:
        _fail("forward(x_0) never called self.noise_like: draw the noise with self.noise_like(x_0.shape, x_0.device), "
              "not torch.randn / randn_like (noise_like is the one seam the grader and trainer use)")
    shape, device = noise_like.calls[-1]
    if shape != tuple(x_0.shape):
        _fail(f"forward asked noise_like for shape {list(shape)}; the noise must have x_0's shape {list(x_0.shape)}")
    if not _same_device(device, x_0.device):
        _fail(f"forward asked noise_like for noise on {device}; it belongs on x_0's device {x_0.device}")
    if not any(isinstance(calls[0]["noise"], torch.Tensor) and torch.equal(calls[0]["noise"], z) for z in noise_like.returned):
        _fail("forward did not pass the noise drawn by noise_like to p_losses")


def test_forward_draws_t(diffusion_class, config):
    """t: a [B] long tensor on x_0's device, one uniform draw from 0..T-1 per example."""
    timesteps, batch = config["T"], config["B"]
    diffusion = _build(diffusion_class, config["C"], config["size"], timesteps)
    diffusion.noise_like = RecordingNoise()
    calls = _spy_p_losses(diffusion)
    x_0 = _images(config, 4)
    torch.manual_seed(0)  # the draws are yours; the seed only makes a failure repeatable
    got = _call("forward", diffusion, x_0, _images(config, 5))
    _check_forward_result(got, calls)
    t = calls[0]["t"]
    if not isinstance(t, torch.Tensor):
        _fail(f"forward passed t = {t!r} to p_losses; t must be a [B] long tensor, one step per example")
    if t.dtype != torch.long:
        _fail(f"forward drew t with dtype {_dtype(t)}; time steps are indexes: use torch.randint(..., dtype=torch.long)")
    if tuple(t.shape) != (batch,):
        _fail(f"forward drew t of shape {list(t.shape)}; it needs shape [B] = [{batch}], one step per example")
    if t.device != x_0.device:
        _fail(f"forward drew t on {t.device} while x_0 is on {x_0.device}; create t on (or move it to) x_0's device")
    low, high = int(t.min()), int(t.max())
    if low == high:
        _fail(f"forward gave every example the same t = {low}; draw one t per example (shape [B]) so a batch mixes steps")
    if low < 0 or high > timesteps - 1:
        hint = " (the slides' 1-indexed t; in code t = 0..T-1)" if low >= 1 and high == timesteps else ""
        _fail(f"forward drew t in {low}..{high}, outside 0..T-1 = 0..{timesteps - 1}{hint}: use torch.randint(0, T, (B,))")
    counts = torch.bincount(t.cpu(), minlength=timesteps)
    if counts[timesteps - 1] == 0:
        _fail(f"forward: in {batch} draws t never took the value T-1 = {timesteps - 1}: torch.randint's upper bound is "
              "exclusive, so draw with torch.randint(0, T, (B,)), T = self.num_timesteps")
    if counts[0] == 0:
        _fail(f"forward: in {batch} draws t never took the value 0: t runs over 0..T-1 = 0..{timesteps - 1}")
    expected = batch / timesteps  # a fair draw stays far inside [expected / 4, expected * 2.5] (odds below 1e-9)
    uneven = [k for k in range(timesteps) if not expected / 4 <= counts[k] <= expected * 2.5]
    if uneven:
        _fail(f"forward's t is far from uniform on 0..{timesteps - 1}: value {uneven[0]} came up {int(counts[uneven[0]])} "
              f"times in {batch} draws (about {expected:.0f} expected); draw t ~ Uniform{{0, ..., T-1}}")


def test_p_sample(diffusion_class, case):
    """One step of Algorithm 2 at t_index 0, 1, T-1 and in between; noise from noise_like."""
    check_reference(diffusion_class, case)


def test_p_sample_loop_steps(diffusion_class, config):
    """p_sample_loop calls p_sample for t_index = T-1, ..., 0, feeding each output to the next step."""
    timesteps, batch = config["T"], config["B"]
    diffusion = _build(diffusion_class, config["C"], config["size"], timesteps)
    diffusion.noise_like = RecordingNoise()
    steps = _spy_p_sample(diffusion)
    img = _images(config, 6)
    got = _call("p_sample_loop", diffusion.p_sample_loop, img.clone())
    order = [s["t_index"] for s in steps]
    right = list(range(timesteps - 1, -1, -1))
    if order != right:
        named = {
            tuple(range(timesteps)): "time runs forwards; Algorithm 2 goes from t_index = T-1 down to 0",
            tuple(range(timesteps - 1, 0, -1)): "the last step (t_index 0) is skipped: range(T-1, -1, -1) includes 0",
            tuple(range(timesteps - 2, -1, -1)): "the first step (t_index T-1) is skipped",
            tuple(range(timesteps, 0, -1)): "t_index runs T..1 (the slides' 1-indexed time); in code it runs T-1..0",
        }.get(tuple(order), "")
        shown = order if len(order) <= 8 else order[:4] + ["..."] + order[-3:]
        _fail(f"p_sample_loop called p_sample with t_index = {shown}; expected T-1, ..., 0 = "
              f"{timesteps - 1}, ..., 0 ({timesteps} steps)" + (f": {named}" if named else ""))
    for k, step in enumerate(steps):
        t, t_index = step["t"], step["t_index"]
        if type(t_index) is not int:
            _fail(f"p_sample_loop passed t_index as {type(t_index).__name__}; pass a plain Python int (the loop counter)")
        if not isinstance(t, torch.Tensor) or t.dtype != torch.long or tuple(t.shape) != (batch,) or t.device != img.device:
            described = f"{_dtype(t)} {list(t.shape)} on {t.device}" if isinstance(t, torch.Tensor) else repr(t)
            _fail(f"p_sample_loop passed t = {described} at t_index {t_index}; t must be a [B] = [{batch}] long tensor "
                  f"on the image's device, every entry equal to t_index")
        if not bool((t == t_index).all()):
            hint = " (t built once before the loop?)" if bool((t == steps[0]["t_index"]).all()) else ""
            _fail(f"p_sample_loop passed t = {t.tolist()[:4]}... with t_index = {t_index}; every entry of t must equal t_index{hint}")
        previous = img if k == 0 else steps[k - 1]["out"]
        if step["x"].shape != previous.shape or not torch.equal(step["x"], previous):
            source = "img (x_T)" if k == 0 else "the previous step's output"
            _fail(f"p_sample_loop: the step at t_index {t_index} did not start from {source}; "
                  "each step continues from the last: x = p_sample(x, t, t_index)")
    last = steps[-1]["out"]
    if not isinstance(got, torch.Tensor) or got.shape != last.shape:
        _fail(f"p_sample_loop returned {type(got).__name__ if not isinstance(got, torch.Tensor) else list(got.shape)}; "
              "it must return the last step's output, shaped like img")
    if not torch.allclose(got, last, rtol=0, atol=1e-6):
        if torch.allclose(got, (last + 1) / 2, rtol=0, atol=1e-6):
            _fail("p_sample_loop returned x_0 mapped to [0, 1]; keep x_0 in [-1, 1] here (sample does the mapping)")
        _fail("p_sample_loop must return the output of the last step (t_index 0), unchanged")


def test_p_sample_loop(diffusion_class, case):
    """The whole reverse process from a fixed x_T with fixed noise, through your p_sample."""
    check_reference(diffusion_class, case)


def test_sample_calls(diffusion_class, config):
    """sample draws x_T = noise_like((B, C, H, W), device), runs p_sample_loop on it, maps to [0, 1]."""
    batch, channels, size = config["B"], config["C"], config["size"]
    diffusion = _build(diffusion_class, channels, size, config["T"])
    noise_like = RecordingNoise()
    diffusion.noise_like = noise_like
    calls = _spy_p_sample_loop(diffusion)
    got = _call("sample", diffusion.sample, batch)
    shape = (batch, channels, size, size)
    if not noise_like.calls:
        _fail("sample never called self.noise_like: draw x_T with self.noise_like((B, C, H, W), device), "
              "not torch.randn (noise_like is the seam the grader uses)")
    asked, device = noise_like.calls[0]
    if asked != shape:
        _fail(f"sample asked noise_like for shape {list(asked)}; x_T needs (B, C, H, W) = {list(shape)} "
              "(channels = self.channels, H = W = self.image_size)")
    if not _same_device(device, diffusion.alphas.device):
        _fail(f"sample asked noise_like for noise on {device}; sample on the buffers' device, self.device")
    if len(calls) != 1:
        _fail(f"sample called p_sample_loop {len(calls)} times; call it once, on x_T")
    if not torch.equal(calls[0]["img"], noise_like.returned[0]):
        _fail("sample did not pass the x_T drawn by noise_like to p_sample_loop")
    loop_out = calls[0]["out"]
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != shape:
        _fail(f"sample returned {list(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}; expected {list(shape)}")
    if torch.allclose(got, (loop_out + 1) / 2, rtol=0, atol=1e-6):
        if got.min() < 0 or got.max() > 1:
            _fail("sample's images are outside [0, 1]")
        return
    if torch.allclose(got, loop_out, rtol=0, atol=1e-6):
        _fail("sample returned results in [-1, 1] instead of [0, 1]: map x_0 with (x_0 + 1) / 2")
    if torch.allclose(got, loop_out.clamp(0, 1), rtol=0, atol=1e-6):
        _fail("sample clamped x_0 to [0, 1] instead of mapping it: use (x_0 + 1) / 2, which keeps the negative half")
    _fail("sample must return (p_sample_loop(x_T) + 1) / 2: images in [0, 1]")


def test_sample(diffusion_class, case):
    """sample end to end: x_T from noise_like, your loop and p_sample, mapped to [0, 1]."""
    check_reference(diffusion_class, case)


# ----------------------------------------------------------------------------
# The stand-in noise predictor and the fixed noise
# ----------------------------------------------------------------------------


class GradingError(Exception):
    """A wrong call noticed by one of the test's stand-ins; the message explains it."""


class StandInModel(nn.Module):
    """A tiny deterministic noise predictor used instead of the U-Net in these tests.

        h       = mix @ x_t  +  spatial * (x_t shifted right - x_t shifted down)
        eps_hat = tanh(h + shift[t]) * gain[t]

    x_t: [B, C, H, W]; t: [B] long. `mix` is [C, C]; `spatial` is [C]; `shift` and `gain` are
    [T, C]: every step has its own values, so a wrong t gives a visibly different prediction.
    Elementwise arithmetic only, so CPU and CUDA agree to float32 rounding (a convolution could
    run in TF32 on a GPU). It also checks how it is called and says what is wrong.
    """

    def __init__(self, channels: int, timesteps: int):
        super().__init__()
        self.mix = nn.Parameter(torch.eye(channels))
        self.spatial = nn.Parameter(torch.zeros(channels))
        self.shift = nn.Parameter(torch.zeros(timesteps, channels))
        self.gain = nn.Parameter(torch.ones(timesteps, channels))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self._check_call(x_t, t)
        h = (self.mix[None, :, :, None, None] * x_t[:, None]).sum(2)
        h = h + self.spatial[None, :, None, None] * (x_t.roll(1, -1) - x_t.roll(1, -2))
        return torch.tanh(h + self.shift[t][:, :, None, None]) * self.gain[t][:, :, None, None]

    def _check_call(self, x_t: torch.Tensor, t: torch.Tensor) -> None:
        timesteps, channels = self.shift.shape
        if not isinstance(x_t, torch.Tensor) or x_t.dim() != 4 or x_t.shape[1] != channels:
            got = list(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__
            raise GradingError(f"the model was called with x_t = {got}; it takes a [B, {channels}, H, W] image batch")
        if x_t.dtype != self.mix.dtype:
            raise GradingError(
                f"the model was called with a {_dtype(x_t)} x_t, but the network's weights are {_dtype(self.mix)}: "
                "keep x_t in float32 (the U-Net would fail here)")
        if not isinstance(t, torch.Tensor):
            raise GradingError(f"the model was called with t = {t!r}; it takes t as a [B] long tensor, one step per image")
        if t.dtype != torch.long:
            raise GradingError(f"the model was called with t of dtype {_dtype(t)}; time steps are integer indexes (torch.long)")
        if t.dim() != 1 or t.shape[0] != x_t.shape[0]:
            raise GradingError(f"the model was called with t of shape {list(t.shape)}; it needs [B] = [{x_t.shape[0]}], one step per image")
        if t.device != x_t.device:
            raise GradingError(f"the model was called with t on {t.device} but x_t on {x_t.device}; put t on x_t's device")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= timesteps):
            raise GradingError(
                f"the model was called with t = {int(t.min())}..{int(t.max())}, outside 0..T-1 = 0..{timesteps - 1} "
                "(time is 0-indexed in this code: index i is the slides' t = i + 1)")


class NoiseSequence:
    """Stands in for `noise_like`: hands out the reference's noise tensors, in order.

    `tensors` holds what a correct implementation draws, followed by spares, so that an
    implementation that draws too often still gets fixed values (and a recognisable output).
    """

    def __init__(self, tensors: list[torch.Tensor], needed: int):
        self.tensors = [z.to(DEVICE) for z in tensors]
        self.needed = needed
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, shape, device=None) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        self.calls.append(shape)
        k = len(self.calls)
        if k > len(self.tensors):
            raise GradingError(f"noise_like was called {_times(k)}; this case needs {_times(self.needed)}")
        z = self.tensors[k - 1]
        if tuple(z.shape) != shape:
            raise GradingError(f"noise_like call {k} asked for shape {list(shape)}; the noise needed here has shape {list(z.shape)}")
        return z.to(device if device is not None else DEVICE, copy=True)


class RecordingNoise:
    """A `noise_like` that records its calls and returns fixed pseudo-random tensors of any shape."""

    def __init__(self):
        self.calls: list[tuple[tuple[int, ...], object]] = []
        self.returned: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self, shape, device=None) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        self.calls.append((shape, device))
        z = torch.randn(shape, generator=self.generator).to(device if device is not None else DEVICE)
        self.returned.append(z)
        return z


# ----------------------------------------------------------------------------
# The reference file
# ----------------------------------------------------------------------------


_REFERENCES: dict[str, dict] = {}


def load_reference(path: str | os.PathLike | None = None) -> dict:
    """The reference dict (plain tensors, ints and strings), from DIFFUSION_REFERENCE or data/."""
    path = Path(path or os.environ.get("DIFFUSION_REFERENCE") or DEFAULT_REFERENCE)
    key = str(path.resolve())
    if key not in _REFERENCES:
        if not path.is_file():
            raise FileNotFoundError(
                f"reference file {path} not found: restore data/reference/public.pt from the handout, "
                "or point DIFFUSION_REFERENCE at a reference file")
        reference = torch.load(path, map_location="cpu", weights_only=True)
        for function, cases in reference["cases"].items():
            for case in cases:
                case["function"], case["reference"] = function, reference
        _REFERENCES[key] = reference
    return _REFERENCES[key]


# ----------------------------------------------------------------------------
# Running your code and explaining what went wrong
# ----------------------------------------------------------------------------


def _fail(lines: list[str] | str, blame: tuple[str, ...] = ()) -> None:
    """Fail the test with a clean message. `blame` names the functions it calls that cause the
    failure, so that a grader can charge it to them instead (see tools/autograder/grade.py)."""
    failure = pytest.fail.Exception("\n".join([lines] if isinstance(lines, str) else lines), pytrace=False)
    failure.blame = tuple(blame)
    raise failure from None  # the message says it all: no chained traceback


def _same_device(requested, actual: torch.device) -> bool:
    return requested is None or torch.empty(0, device=requested).device == actual


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _dtype(x: torch.Tensor) -> str:
    return str(x.dtype).replace("torch.", "")


def _student_frames(error: BaseException) -> list[traceback.FrameSummary]:
    """The traceback's frames in your code: not in this file, not inside torch."""
    here, torch_dir = os.path.abspath(__file__), os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
    return [f for f in traceback.extract_tb(error.__traceback__)
            if os.path.abspath(f.filename) != here and not os.path.abspath(f.filename).startswith(torch_dir)]


def _call(name: str, fn, *args, **kwargs):
    """Call a student function; turn any exception into a one-paragraph failure."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as error:
        inner = [f.name for f in _student_frames(error) if f.name in FUNCTIONS]
        culprit = inner[-1] if inner else name
        if culprit == name:
            _fail(f"{name}: not implemented yet")
        _fail(f"{name}: cannot be checked until {culprit} is implemented ({culprit}: not implemented yet)", (culprit,))
    except GradingError as error:
        _fail(f"{name}: {error}")
    except Exception as error:  # noqa: BLE001 - any bug in student code becomes a readable failure
        frames = _student_frames(error)
        start = max([i for i, f in enumerate(frames) if f.name == name] or [len(frames) - 1])
        where = "; ".join(f"{Path(f.filename).name} line {f.lineno} in {f.name}: {f.line}" for f in frames[start:][-3:])
        _fail(f"{name} raised {type(error).__name__}: {error}" + (f"\n  at {where}" if where else ""))


def _where(shape: tuple[int, ...], flat: int) -> str:
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    index.reverse()
    if len(index) == 4:
        return f"example {index[0]}, channel {index[1]}, pixel ({index[2]}, {index[3]})"
    return f"index {index}"


def _close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    return got.shape == expected.shape and bool(
        ((got.double() - expected.double()).abs() <= ATOL + RTOL * expected.double().abs()).all())


def _difference(what: str, got, expected: torch.Tensor) -> str | None:
    """None if `got` matches `expected`; otherwise a sentence saying how it differs."""
    if not isinstance(got, torch.Tensor):
        hint = " (a missing `return`?)" if got is None else ""
        return f"returned {type(got).__name__}{hint}; expected a tensor ({what})"
    if got.shape != expected.shape:
        kind = "a scalar, shape []" if expected.dim() == 0 else f"shape {list(expected.shape)}"
        return f"returned shape {list(got.shape)}; expected {kind} ({what})"
    if got.dtype != expected.dtype:
        return f"returned {_dtype(got)}; expected {_dtype(expected)} (compute in any precision, return the inputs' dtype)"
    if got.device != expected.device:
        return f"returned a tensor on {got.device}; expected it on {expected.device}, where the inputs are"
    got_d, exp_d = got.detach().double().cpu(), expected.double().cpu()
    bad_values = ~torch.isfinite(got_d)
    if bad_values.any():
        first = int(bad_values.flatten().nonzero()[0])
        return f"{int(bad_values.sum())} values are NaN or infinite, the first at {_where(tuple(got.shape), first)}"
    error = (got_d - exp_d).abs()
    wrong = error > ATOL + RTOL * exp_d.abs()
    if not wrong.any():
        return None
    if got.dim() == 0:
        return f"{what} is {got_d.item():.6g}; expected {exp_d.item():.6g}"
    flat = int(error.flatten().argmax())
    return (f"{what} differs from the reference: largest error {error.max().item():.3g} at {_where(tuple(got.shape), flat)} "
            f"(yours {got_d.flatten()[flat].item():.6g}, expected {exp_d.flatten()[flat].item():.6g}); "
            f"{int(wrong.sum())} of {wrong.numel()} values are off")


def _known_mistakes(function: str, got, case: dict) -> list[tuple[str, str]]:
    """(function the mistake is in, sentence naming it) for every stored mistake whose output equals `got`."""
    if not isinstance(got, torch.Tensor):
        return []
    got = got.detach().cpu()
    catalogue = case["reference"]["mistakes"]
    found = []
    for key, output in case["mistakes"].items():
        if got.dtype == output.dtype and _close(got, output):
            mistake = catalogue[key]
            where = "" if mistake["function"] == function else f" in {mistake['function']}"
            found.append((mistake["function"], f"This matches a known mistake{where}: {mistake['title']}.\n  {mistake['why']}"))
    return found


# ----------------------------------------------------------------------------
# Reference checks: fixed inputs, fixed noise, stored outputs
# ----------------------------------------------------------------------------


WHAT = {"q_sample": "x_t", "p_losses": "the loss", "p_sample": "x_{t-1}", "p_sample_loop": "x_0", "sample": "the image batch"}


def _build(diffusion_class, channels: int, image_size: int, timesteps: int, model_state=None):
    model = StandInModel(channels, timesteps)
    if model_state is not None:
        model.load_state_dict(model_state)
    return diffusion_class(model, image_size=image_size, channels=channels, timesteps=timesteps).to(DEVICE)


def _spy_q_sample(diffusion, args: list, x_t: torch.Tensor) -> None:
    """p_losses is checked on its own: q_sample is replaced by a spy that returns the right x_t
    (so a bug in your q_sample costs nothing here) and checks that it gets p_losses' arguments."""
    x_t = x_t.to(DEVICE)

    def q_sample(*a, **k):
        bound = _bind("q_sample", ("x_0", "t", "noise"), a, k)
        for name, given in zip(("x_0", "t", "noise"), args):
            got = bound[name]
            if not (isinstance(got, torch.Tensor) and got.shape == given.shape and torch.equal(got, given)):
                raise GradingError(f"called q_sample with another {name} than the one it was given; "
                                   "make x_t with self.q_sample(x_0, t, noise)")
        return x_t.clone()

    diffusion.q_sample = q_sample


def _run_case(diffusion_class, case: dict):
    config = case["config"]
    diffusion = _build(diffusion_class, config["channels"], config["image_size"], config["timesteps"], case["model"])
    noise = NoiseSequence(case["noise_like"], case["noise_like_calls"])
    diffusion.noise_like = noise
    args = [a.to(DEVICE, copy=True) if isinstance(a, torch.Tensor) else a for a in case["args"]]
    if "q_sample_returns" in case:
        _spy_q_sample(diffusion, [a.clone() for a in args], case["q_sample_returns"])
    function = case["function"]
    return _call(function, getattr(diffusion, function), *args), noise


def _reference_failures(diffusion_class, function: str, reference: dict) -> bool:
    """Whether any reference case of `function` fails (for "fix that one first" hints)."""
    for case in reference["cases"].get(function, []):
        try:
            got, _ = _run_case(diffusion_class, case)
        except pytest.fail.Exception:
            return True
        if _difference(WHAT[function], got, case["expected"].to(DEVICE)) is not None:
            return True
    return False


def check_reference(diffusion_class, case: dict) -> None:
    """Run one stored case and compare with the stored output; explain any difference."""
    function = case["function"]
    got, noise = _run_case(diffusion_class, case)
    problem = _difference(WHAT[function], got, case["expected"].to(DEVICE))
    if problem is None:
        return
    lines = [f"{function} [{case['label']}]: {problem}"]
    known = _known_mistakes(function, got, case)
    lines += [line for _, line in known]
    blame = ()
    if all(culprit != function for culprit, _ in known):  # no mistake of this function itself
        calls, needed = len(noise.calls), case["noise_like_calls"]
        if calls != needed:
            lines.append(f"noise_like was called {_times(calls)}; this case needs {_times(needed)}"
                         + (" (noise drawn elsewhere, e.g. torch.randn, bypasses the seam the grader uses)" if calls < needed else ""))
        again, _ = _run_case(diffusion_class, case)
        if isinstance(again, torch.Tensor) and isinstance(got, torch.Tensor) and not _close(again.detach(), got.detach()):
            lines.append(f"{function} gives different results for the same inputs and the same noise_like values: it draws "
                         "randomness elsewhere (torch.randn, randn_like, rand). Draw every noise with self.noise_like(shape, device).")
        blame = tuple(d for d in DEPENDS_ON.get(function, ()) if _reference_failures(diffusion_class, d, case["reference"]))
        lines += [f"Note: {d}, which {function} calls, fails its own tests: fix {d} first." for d in blame]
    _fail(lines, blame)


# ----------------------------------------------------------------------------
# Spies: what forward, p_sample_loop and sample pass to the functions they call
# ----------------------------------------------------------------------------


def _bind(function: str, names: tuple[str, ...], args, kwargs) -> dict:
    signature = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    try:
        return signature.bind(*args, **kwargs).arguments
    except TypeError as error:
        raise GradingError(f"{function} was called with the wrong arguments ({error}); call it as {function}({', '.join(names)})")


def _images(config: dict, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (config["B"], config["C"], config["size"], config["size"])
    return (torch.rand(shape, generator=generator) * 2 - 1).to(DEVICE)


def _spy_p_losses(diffusion):
    """Replace p_losses with a spy that records its arguments and returns a known scalar."""
    calls = []

    def p_losses(*args, **kwargs):
        bound = _bind("p_losses", ("x_0", "t", "noise"), args, kwargs)
        calls.append(bound)
        loss = torch.tensor(0.123 + len(calls), device=DEVICE)
        bound["loss"] = loss
        return loss

    diffusion.p_losses = p_losses
    return calls


def _check_forward_result(got, calls) -> None:
    if len(calls) != 1:
        _fail(f"forward called p_losses {len(calls)} times; it should call self.p_losses(x_0, t, noise) exactly once "
              "and return its loss")
    if got is not calls[0]["loss"] and not (isinstance(got, torch.Tensor) and got.shape == () and torch.equal(got, calls[0]["loss"])):
        _fail("forward must return the loss that p_losses returned (a scalar tensor), unchanged")


def _spy_p_sample(diffusion):
    """Replace p_sample with a spy: a fixed affine map per step, so order and chaining show in the result."""
    steps = []

    def p_sample(*args, **kwargs):
        bound = _bind("p_sample", ("x", "t", "t_index"), args, kwargs)
        x = bound["x"]
        if not isinstance(x, torch.Tensor):
            raise GradingError(f"passed x = {type(x).__name__} to p_sample; pass the current image tensor")
        out = x * 0.9 + 0.01 * (len(steps) + 1)
        steps.append(dict(bound, out=out))
        return out

    diffusion.p_sample = p_sample
    return steps


def _spy_p_sample_loop(diffusion):
    calls = []

    def p_sample_loop(*args, **kwargs):
        img = _bind("p_sample_loop", ("img",), args, kwargs)["img"]
        if not isinstance(img, torch.Tensor):
            raise GradingError(f"passed {type(img).__name__} to p_sample_loop; pass x_T, a tensor")
        out = torch.tanh(2 * img)  # some x_0 in (-1, 1)
        calls.append({"img": img, "out": out})
        return out

    diffusion.p_sample_loop = p_sample_loop
    return calls


# ----------------------------------------------------------------------------
# Parametrisation, and an in-process entry point for the project's own tests
# ----------------------------------------------------------------------------


def _parameters(test_name: str, reference: dict | None = None) -> list[tuple[str, dict]]:
    if test_name in CONFIGS:
        return list(CONFIGS[test_name].items())
    cases = (reference or load_reference())["cases"].get(test_name[len("test_"):], [])
    return [(case["id"], case) for case in cases]


def pytest_generate_tests(metafunc):
    name = metafunc.function.__name__
    for argument in ("case", "config"):
        if argument in metafunc.fixturenames:
            parameters = _parameters(name)
            metafunc.parametrize(argument, [p for _, p in parameters], ids=[i for i, _ in parameters])


@pytest.fixture
def diffusion_class():
    """The class under test: your GaussianDiffusion."""
    return GaussianDiffusion


def run_checks(diffusion_class, reference: dict | None = None) -> dict[str, str | None]:
    """Every check of this file on `diffusion_class`: {test id: None if it passed, else the failure text}."""
    reference = reference or load_reference()
    results = {}
    for name, test in globals().items():
        if not (name.startswith("test_") and callable(test)):
            continue
        for param_id, parameter in _parameters(name, reference):
            try:
                test(diffusion_class, parameter)
                results[f"{name}[{param_id}]"] = None
            except pytest.fail.Exception as failure:
                results[f"{name}[{param_id}]"] = str(failure.msg)
    return results
