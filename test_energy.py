"""Checks for the seven EnergyModel functions you write in energy.py (Part 3).

    pytest test_energy.py                        # everything, a few seconds on a laptop CPU
    pytest test_energy.py -k langevin_step       # the tests of one function

How the checks work
- A tiny deterministic stand-in energy (`StandInEnergy` below, not the CNN) plays E(x), so the
  expected values do not change when the network does.
- The sources of randomness (`noise_like`, `uniform_like`, `draw_replay`) are replaced by fixed
  tensors. Every input, every noise tensor, the stand-in's weights, the replay buffer and every
  expected output are stored in data/reference/public_energy.pt, so the checks never depend on
  the random number generator of your torch version.
- Besides the values, the tests check what the method needs: the gradient is taken with respect
  to x, not the weights; no graph survives a step; sampling neither changes the weights nor fills
  their .grad; the loss does not differentiate through the fake samples. `forward` and `sample`
  are judged with spies: what they pass to the functions they call.

Reading a failure
Each failure names the function and the case, then says what differs: the largest error, where
it is and your value next to the expected one. When your output equals the output of a common
mistake stored in the reference file, the message names the mistake and the equation it breaks.
"<name>: not implemented yet" means the function still raises NotImplementedError.
Tolerance: |yours - expected| <= 1e-5 + 1e-5 |expected|.

Replay a failing case in Python:
    import test_energy as te
    case = te.load_reference()["cases"]["langevin_step"][0]
    got, _ = te.run_case(te.EnergyModel, case)    # your output; case["expected"] is the reference
    te.check_reference(te.EnergyModel, case)      # raises with the message pytest shows

Environment variables
    ENERGY_REFERENCE     another reference file (the autograder's hidden set uses this)
    ENERGY_TEST_DEVICE   run on another device, e.g. cuda (default: cpu)
    ENERGY_TEST_TIMEOUT  seconds before a test counts as hung (default: 60)
"""

from __future__ import annotations

import inspect
import os
import traceback
from pathlib import Path

import pytest
import torch
from torch import nn

from energy import EnergyModel

# An infinite loop in one function fails that test instead of hanging the whole run.
pytestmark = pytest.mark.timeout(float(os.environ.get("ENERGY_TEST_TIMEOUT", "60")))

FUNCTIONS = ("langevin_step", "langevin_sample", "loss", "sample_buffer", "update_buffer", "forward", "sample")
# End to end, test_langevin_sample runs your own langevin_step.
DEPENDS_ON = {"langevin_sample": ("langevin_step",)}
ATOL = 1e-5
RTOL = 1e-5
DEFAULT_REFERENCE = Path(__file__).resolve().parent / "data" / "reference" / "public_energy.pt"
DEVICE = torch.device(os.environ.get("ENERGY_TEST_DEVICE", "cpu"))

# The property and spy tests' settings: batch B, channels C, image size, and the step counts.
SHAPES = [pytest.param(dict(B=3, C=3, size=4), id="B3-C3-4x4"), pytest.param(dict(B=2, C=1, size=8), id="B2-C1-8x8")]
STEPS = [pytest.param(dict(B=2, C=3, size=4, steps=4), id="steps-4"),
         pytest.param(dict(B=3, C=1, size=4, steps=1), id="steps-1"),
         pytest.param(dict(B=2, C=3, size=4, steps=0), id="steps-0")]
METHOD = [pytest.param(dict(B=3, C=3, size=4, langevin_steps=7, sample_steps=5), id="B3-C3-K7"),
          pytest.param(dict(B=2, C=1, size=8, langevin_steps=3, sample_steps=11), id="B2-C1-K3")]


_REFERENCES: dict[str, dict] = {}


def load_reference(path: str | os.PathLike | None = None) -> dict:
    """The reference dict (plain tensors, numbers and strings), from ENERGY_REFERENCE or data/."""
    path = Path(path or os.environ.get("ENERGY_REFERENCE") or DEFAULT_REFERENCE)
    key = str(path.resolve())
    if key not in _REFERENCES:
        if not path.is_file():
            raise FileNotFoundError(
                f"reference file {path} not found: restore data/reference/public_energy.pt from the handout, "
                "or point ENERGY_REFERENCE at a reference file")
        reference = torch.load(path, map_location="cpu", weights_only=True)
        for function, cases in reference["cases"].items():
            for case in cases:
                case["function"], case["reference"] = function, reference
        _REFERENCES[key] = reference
    return _REFERENCES[key]


def reference_cases(function: str) -> list:
    """The reference's cases of `function`, as pytest parameters (one failing case if the file is missing)."""
    try:
        cases = load_reference()["cases"].get(function, [])
    except FileNotFoundError as error:
        return [pytest.param({"missing": str(error)}, id="no-reference-file")]
    return [pytest.param(case, id=case["id"]) for case in cases]


# ----------------------------------------------------------------------------
# The tests, function by function (the machinery they use follows below)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", reference_cases("langevin_step"))
def test_langevin_step(model_class, case):
    """x' = clamp(x - step_size * grad_x E(x) + noise_scale * z, -1, 1), z from noise_like."""
    check_reference(model_class, case)


@pytest.mark.parametrize("shape", SHAPES)
def test_langevin_step_moves_x_not_the_weights(model_class, shape):
    """langevin_step returns a detached x and leaves the weights, their .grad and requires_grad alone."""
    model = _build(model_class, shape["C"], shape["size"])
    model.noise_like = RecordingNoise()
    x = _images(shape, 1)
    given = x.clone()
    weights = {name: p.detach().clone() for name, p in model.energy_net.named_parameters()}
    out = _call("langevin_step", model.langevin_step, x)
    _check_image_batch("langevin_step", out, given)
    if out.requires_grad or out.grad_fn is not None:
        _fail("langevin_step returned a tensor still attached to the autograd graph: the graph is kept across steps "
              "(each step would hold every earlier step's graph in memory, and backpropagate through them). "
              "Return the new x detached: compute it from x.detach(), or call .detach() on the result")
    if not torch.equal(x, given):
        _fail("langevin_step changed its input x in place; compute the new x as a new tensor")
    for name, p in model.energy_net.named_parameters():
        if not p.requires_grad:
            _fail(f"langevin_step left the weight {name} with requires_grad=False: weights left frozen after sampling. "
                  "If you turn requires_grad off while sampling, turn it back on; torch.autograd.grad(E, x) needs neither")
        if p.grad is not None:
            _fail(f"langevin_step filled the .grad of the weight {name}: gradients accumulated into the weights during "
                  "sampling (they would be added to the next training step's gradient). Take the gradient with respect "
                  "to x only: torch.autograd.grad(E(x).sum(), x)")
        if not torch.equal(p.detach(), weights[name]):
            _fail(f"langevin_step changed the weight {name}: weights updated during sampling. Langevin dynamics moves "
                  "the images x along -grad_x E(x); the weights stay as they are")


@pytest.mark.parametrize("shape", SHAPES)
def test_langevin_step_under_no_grad(model_class, shape):
    """langevin_step works when called inside torch.no_grad() (as sampling code often is)."""
    model = _build(model_class, shape["C"], shape["size"])
    x = _images(shape, 2)
    model.noise_like = RecordingNoise()
    expected = _call("langevin_step", model.langevin_step, x.clone())
    model.noise_like = RecordingNoise()
    try:
        with torch.no_grad():
            got = model.langevin_step(x.clone())
    except NotImplementedError:
        _fail("langevin_step: not implemented yet")
    except Exception as error:  # noqa: BLE001 - any bug in student code becomes a readable failure
        _fail(f"langevin_step fails inside torch.no_grad() ({type(error).__name__}: {str(error)[:200]}): compute "
              "the gradient inside `with torch.enable_grad():`, which turns autograd back on")
    if not isinstance(got, torch.Tensor) or not _close(got, expected):
        _fail("langevin_step gives another result inside torch.no_grad() than outside it: compute the gradient inside "
              "`with torch.enable_grad():`")


@pytest.mark.parametrize("config", STEPS)
def test_langevin_sample_steps(model_class, config):
    """langevin_sample(x, steps) calls langevin_step `steps` times, each on the previous step's output."""
    model = _build(model_class, config["C"], config["size"])
    model.noise_like = RecordingNoise()
    steps = _spy(model, "langevin_step", ("x",), lambda bound, k: bound["x"] * 0.9 + 0.01 * k)
    x = _images(config, 3)
    got = _call("langevin_sample", model.langevin_sample, x.clone(), config["steps"])
    wanted = config["steps"]
    if len(steps) != wanted:
        _fail(f"langevin_sample(x, steps={wanted}) called langevin_step {_times(len(steps))}; it must call it "
              f"exactly `steps` = {wanted} times" + (" (an off-by-one in the loop?)" if abs(len(steps) - wanted) == 1 else ""))
    for k, step in enumerate(steps):
        previous = x if k == 0 else steps[k - 1]["out"]
        if not _same_tensor(step["x"], previous):
            source = "x" if k == 0 else "the previous step's output"
            _fail(f"langevin_sample: step {k + 1} did not start from {source}; each step continues from the last: "
                  "x = self.langevin_step(x)")
    last = steps[-1]["out"] if steps else x
    if not isinstance(got, torch.Tensor) or not _same_tensor(got, last):
        what = "the last step's output" if steps else "x unchanged (steps = 0)"
        _fail(f"langevin_sample must return {what}")


@pytest.mark.parametrize("case", reference_cases("langevin_sample"))
def test_langevin_sample(model_class, case):
    """`steps` Langevin steps from a fixed x with fixed noise, through your langevin_step."""
    check_reference(model_class, case)


@pytest.mark.parametrize("case", reference_cases("loss"))
def test_loss(model_class, case):
    """mean E(x_real) - mean E(x_fake) + alpha mean(E(x_real)^2 + E(x_fake)^2), and its gradient."""
    check_reference(model_class, case)


@pytest.mark.parametrize("shape", SHAPES)
def test_loss_detaches_the_fakes(model_class, shape):
    """The loss trains the weights and sends no gradient into x_fake."""
    model = _build(model_class, shape["C"], shape["size"])
    x_real, x_fake = _images(shape, 4), _images(shape, 5).requires_grad_(True)
    loss = _call("loss", model.loss, x_real, x_fake)
    if not isinstance(loss, torch.Tensor) or loss.shape != ():
        _fail(f"loss returned {_describe(loss)}; expected a scalar tensor")
    if not loss.requires_grad:
        _fail("loss: the loss carries no gradient to the weights (requires_grad False): compute it from the energies "
              "with torch operations, outside torch.no_grad(), so that backward() can train the weights")
    (grad,) = torch.autograd.grad(loss, x_fake, allow_unused=True, retain_graph=True)
    if grad is not None:
        _fail("loss sends gradients into x_fake: fake samples not detached in the loss. Use E(x_fake.detach()): the "
              "loss trains the weights, never the Langevin chain that made the samples")


@pytest.mark.parametrize("case", reference_cases("sample_buffer"))
def test_sample_buffer(model_class, case):
    """95% of the chains start from replay[idx], the fresh ones (5%) from uniform_like's noise."""
    check_reference(model_class, case)


@pytest.mark.parametrize("shape", SHAPES)
def test_sample_buffer_returns_a_copy(model_class, shape):
    """sample_buffer returns (x, idx) with draw_replay's idx, and x does not share memory with the buffer."""
    model = _build(model_class, shape["C"], shape["size"], buffer_size=8)
    model.replay.copy_(_images(dict(shape, B=8), 6))
    before = model.replay.clone()
    idx = torch.tensor([6, 1, 3][: shape["B"]], device=DEVICE)
    model.draw_replay = ReplaySequence([(idx, torch.zeros(shape["B"], dtype=torch.bool, device=DEVICE))])
    model.uniform_like = RecordingNoise()
    got = _call("sample_buffer", model.sample_buffer, shape["B"])
    if not (isinstance(got, tuple) and len(got) == 2):
        _fail(f"sample_buffer returned {_describe(got)}; it must return the pair (x, idx)")
    x, got_idx = got
    if not isinstance(got_idx, torch.Tensor) or not torch.equal(got_idx.to(DEVICE), idx):
        _fail("sample_buffer must return the idx that draw_replay gave it, so that update_buffer writes the chains back "
              "where they came from")
    if isinstance(x, torch.Tensor):
        x.data.fill_(0.5)  # the caller owns x: changing it must not change the buffer
    if not torch.equal(model.replay, before):
        _fail("sample_buffer returned a view of the buffer (changing x changed replay): index with self.replay[idx], "
              "which copies, or call .clone()")


@pytest.mark.parametrize("case", reference_cases("update_buffer"))
def test_update_buffer(model_class, case):
    """replay[idx_b] = x_b for every b; every other slot unchanged."""
    check_reference(model_class, case)


@pytest.mark.parametrize("shape", SHAPES)
def test_update_buffer_stores_detached(model_class, shape):
    """The buffer keeps values, not a graph."""
    model = _build(model_class, shape["C"], shape["size"], buffer_size=8)
    leaf = _images(shape, 7).requires_grad_(True)
    x = leaf * 1.0  # a result of computation, as Langevin samples can be
    _call("update_buffer", model.update_buffer, x, torch.arange(shape["B"], device=DEVICE))
    if model.replay.requires_grad or model.replay.grad_fn is not None:
        _fail("update_buffer stored samples that are still attached to the autograd graph: the buffer would keep every "
              "step's graph alive. Store x.detach()")


@pytest.mark.parametrize("config", METHOD)
def test_forward_runs_the_method(model_class, config):
    """forward: sample_buffer(B) -> langevin_sample(x, langevin_steps) -> update_buffer(x_fake, idx) -> loss."""
    model = _build(model_class, config["C"], config["size"], langevin_steps=config["langevin_steps"], buffer_size=8)
    model.noise_like, model.uniform_like = RecordingNoise(), RecordingNoise()
    x_real = _images(config, 8)
    x_init, idx = _images(config, 9), torch.tensor([5, 0, 2][: config["B"]], device=DEVICE)
    buffer_calls = _spy(model, "sample_buffer", ("batch_size",), lambda bound, k: (x_init.clone(), idx.clone()))
    chains = _spy(model, "langevin_sample", ("x", "steps"), lambda bound, k: torch.tanh(bound["x"] + 0.3))
    updates = _spy(model, "update_buffer", ("x", "idx"), lambda bound, k: None)
    losses = _spy(model, "loss", ("x_real", "x_fake"), lambda bound, k: torch.tensor(0.5 + k, device=DEVICE))
    got = _call("forward", model.forward, x_real.clone())
    batch = config["B"]
    if len(buffer_calls) != 1 or buffer_calls[0]["batch_size"] != batch:
        asked = [c["batch_size"] for c in buffer_calls]
        _fail(f"forward must call self.sample_buffer(B) once with B = {batch}, the batch size of x_real; it called "
              f"it {_times(len(asked))}" + (f" with {asked}" if asked else "") + ": the chains start from the buffer")
    if len(chains) != 1:
        _fail(f"forward called langevin_sample {_times(len(chains))}; call it once, on the x that sample_buffer returned")
    if not _same_tensor(chains[0]["x"], x_init):
        _fail("forward: langevin_sample did not start from the x that sample_buffer returned (chains started from "
              "fresh noise instead of the replay buffer?)")
    if chains[0]["steps"] != config["langevin_steps"]:
        _fail(f"forward ran langevin_sample with steps = {chains[0]['steps']!r}; use self.langevin_steps = "
              f"{config['langevin_steps']}")
    x_fake = chains[0]["out"]
    if not updates:
        _fail("forward never called update_buffer: buffer never updated, so every chain restarts from the same old "
              "points. Call self.update_buffer(x_fake, idx) with the Langevin samples")
    if len(updates) != 1 or not _same_tensor(updates[0]["x"], x_fake) or not _same_tensor(updates[0]["idx"], idx):
        wrong = " (the chains' starting points were written back instead of the Langevin samples)" \
            if updates and _same_tensor(updates[0]["x"], x_init) else ""
        _fail("forward must call self.update_buffer(x_fake, idx) once, with langevin_sample's output and the idx "
              f"that sample_buffer returned{wrong}")
    if len(losses) != 1 or not _same_tensor(losses[0]["x_real"], x_real) or not _same_tensor(losses[0]["x_fake"], x_fake):
        wrong = " (the chains' starting points used as x_fake?)" if losses and _same_tensor(losses[0]["x_fake"], x_init) else ""
        _fail(f"forward must call self.loss(x_real, x_fake) once, with x_fake = langevin_sample's output{wrong}")
    if not (isinstance(got, torch.Tensor) and got.shape == () and torch.equal(got, losses[0]["out"])):
        _fail("forward must return the loss that self.loss returned, unchanged")


@pytest.mark.parametrize("config", METHOD)
def test_sample_calls(model_class, config):
    """sample: x = uniform_like((B, C, H, W), device), langevin_sample(x, sample_steps), mapped to [0, 1]."""
    batch, channels, size = config["B"], config["C"], config["size"]
    model = _build(model_class, channels, size, sample_steps=config["sample_steps"])
    uniform, gaussian = RecordingNoise(uniform=True), RecordingNoise()
    model.uniform_like, model.noise_like = uniform, gaussian
    chains = _spy(model, "langevin_sample", ("x", "steps"), lambda bound, k: torch.tanh(2 * bound["x"]))
    got = _call("sample", model.sample, batch)
    shape = (batch, channels, size, size)
    if not uniform.calls:
        hint = (" (it drew Gaussian noise with noise_like: the chains start from uniform noise, like the buffer's "
                "fresh chains)") if gaussian.calls else ""
        _fail(f"sample never called self.uniform_like: start the chains from x = self.uniform_like((B, C, H, W), "
              f"self.device){hint}")
    asked, device = uniform.calls[0]
    if asked != shape:
        _fail(f"sample asked uniform_like for shape {list(asked)}; the chains need (B, C, H, W) = {list(shape)}")
    if not _same_device(device, model.replay.device):
        _fail(f"sample asked uniform_like for noise on {device}; sample on the model's device, self.device")
    if len(chains) != 1 or not _same_tensor(chains[0]["x"], uniform.returned[0]):
        _fail("sample must call self.langevin_sample once, on the noise that uniform_like returned")
    if chains[0]["steps"] != config["sample_steps"]:
        _fail(f"sample ran langevin_sample with steps = {chains[0]['steps']!r}; use self.sample_steps = "
              f"{config['sample_steps']}")
    out = chains[0]["out"]
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != shape:
        _fail(f"sample returned {_describe(got)}; expected shape {list(shape)}")
    if torch.allclose(got, (out + 1) / 2, rtol=0, atol=1e-6):
        return
    if torch.allclose(got, out, rtol=0, atol=1e-6):
        _fail("sample returned results in [-1, 1] instead of [0, 1]: map x with (x + 1) / 2")
    if torch.allclose(got, out.clamp(0, 1), rtol=0, atol=1e-6):
        _fail("sample clamped x to [0, 1] instead of mapping it: use (x + 1) / 2, which keeps the negative half")
    _fail("sample must return (langevin_sample(x, sample_steps) + 1) / 2: images in [0, 1]")


# ----------------------------------------------------------------------------
# The stand-in energy and the fixed randomness
# ----------------------------------------------------------------------------


class GradingError(Exception):
    """A wrong call noticed by one of the test's stand-ins; the message explains it."""


class StandInEnergy(nn.Module):
    """A tiny deterministic energy used instead of the CNN in these tests:

        h    = mix @ x  +  spatial * (x shifted right - x shifted down)          (per pixel)
        E(x) = sum over channels and pixels of  scale * tanh(h + shift) + curvature / 2 * x^2

    x: [B, C, H, W] -> E: [B]. `mix` is [C, C]; `spatial`, `shift`, `scale` and `curvature` are [C].
    Elementwise arithmetic and sums only, so CPU and CUDA agree to float32 rounding.
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
            raise GradingError(f"the energy network was called with {_describe(x)}; it takes a [B, {channels}, H, W] batch")
        if x.dtype != self.mix.dtype:
            raise GradingError(f"the energy network was called with a {_dtype(x)} x, but its weights are "
                               f"{_dtype(self.mix)}: keep x in float32")

        def per_channel(v):
            return v[None, :, None, None]

        h = (self.mix[None, :, :, None, None] * x[:, None]).sum(2)
        h = h + per_channel(self.spatial) * (x.roll(1, -1) - x.roll(1, -2))
        e = per_channel(self.scale) * torch.tanh(h + per_channel(self.shift)) + 0.5 * per_channel(self.curvature) * x * x
        return e.flatten(1).sum(1)


class NoiseSequence:
    """Stands in for `noise_like` or `uniform_like`: hands out the reference's tensors, in order.

    `tensors` holds what a correct implementation draws, followed by spares, so that an
    implementation that draws too often still gets fixed values (and a recognisable output).
    """

    def __init__(self, name: str, tensors: list[torch.Tensor], needed: int):
        self.name, self.needed = name, needed
        self.tensors = [z.to(DEVICE) for z in tensors]
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, shape, device=None) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        self.calls.append(shape)
        k = len(self.calls)
        if k > len(self.tensors):
            raise GradingError(f"{self.name} was called {_times(k)}; this case needs {_times(self.needed)}")
        z = self.tensors[k - 1]
        if tuple(z.shape) != shape:
            raise GradingError(f"{self.name} call {k} asked for shape {list(shape)}; the noise needed here has shape "
                               f"{list(z.shape)}")
        return z.to(device if device is not None else DEVICE, copy=True)


class ReplaySequence:
    """Stands in for `draw_replay`: hands out the reference's (idx, fresh) pairs, in order."""

    def __init__(self, draws: list):
        self.draws = [(idx.to(DEVICE), fresh.to(DEVICE)) for idx, fresh in draws]
        self.calls: list[int] = []

    def __call__(self, batch_size) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(batch_size)
        k = len(self.calls)
        if k > len(self.draws):
            raise GradingError(f"draw_replay was called {_times(k)}; this case needs {_times(len(self.draws))}")
        idx, fresh = self.draws[k - 1]
        if batch_size != len(idx):
            raise GradingError(f"draw_replay was called with batch_size = {batch_size!r}; this case's batch has "
                               f"{len(idx)} images")
        return idx.clone(), fresh.clone()


class RecordingNoise:
    """A `noise_like` (or `uniform_like`) that records its calls and returns fixed pseudo-random tensors."""

    def __init__(self, uniform: bool = False):
        self.uniform = uniform
        self.calls: list[tuple[tuple[int, ...], object]] = []
        self.returned: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self, shape, device=None) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        self.calls.append((shape, device))
        if self.uniform:
            z = torch.rand(shape, generator=self.generator) * 2 - 1
        else:
            z = torch.randn(shape, generator=self.generator)
        z = z.to(device if device is not None else DEVICE)
        self.returned.append(z)
        return z.clone()


# ----------------------------------------------------------------------------
# Running your code and explaining what went wrong
# ----------------------------------------------------------------------------


def _fail(lines: list[str] | str, blame: tuple[str, ...] = ()) -> None:
    """Fail the test with a clean message. `blame` names the functions it calls that cause the
    failure, so that a grader can charge it to them instead."""
    failure = pytest.fail.Exception("\n".join([lines] if isinstance(lines, str) else lines), pytrace=False)
    failure.blame = tuple(blame)
    raise failure from None  # the message says it all: no chained traceback


def _same_device(requested, actual: torch.device) -> bool:
    return requested is None or torch.empty(0, device=requested).device == actual


def _same_tensor(a, b) -> bool:
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _dtype(x: torch.Tensor) -> str:
    return str(x.dtype).replace("torch.", "")


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {_dtype(value)} tensor of shape {list(value.shape)}"
    return f"{type(value).__name__}" + (" (a missing `return`?)" if value is None else "")


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


def _check_image_batch(name: str, got, like: torch.Tensor) -> None:
    if not isinstance(got, torch.Tensor) or got.shape != like.shape:
        _fail(f"{name} returned {_describe(got)}; expected x's shape {list(like.shape)}")


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
        ((got.detach().double().cpu() - expected.double().cpu()).abs()
         <= ATOL + RTOL * expected.double().cpu().abs()).all())


def _difference(what: str, got, expected: torch.Tensor) -> str | None:
    """None if `got` matches `expected`; otherwise a sentence saying how it differs."""
    if not isinstance(got, torch.Tensor):
        return f"returned {_describe(got)}; expected a tensor ({what})"
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
    catalogue = case["reference"]["mistakes"]
    found = []
    for key, output in case["mistakes"].items():
        if got.dtype == output.dtype and _close(got, output):
            mistake = catalogue[key]
            where = "" if mistake["function"] == function else f" in {mistake['function']}"
            found.append((mistake["function"], f"This matches a known mistake{where}: {mistake['title']}.\n  {mistake['why']}"))
    return found


# ----------------------------------------------------------------------------
# Reference checks: fixed inputs, fixed randomness, stored outputs
# ----------------------------------------------------------------------------


WHAT = {"langevin_step": "x after the step", "langevin_sample": "x after the steps", "loss": "the loss",
        "sample_buffer": "the starting points x", "update_buffer": "the replay buffer after the update"}


def _build(model_class, channels: int, image_size: int, energy_state=None, **config):
    """The class under test around the stand-in energy, on DEVICE."""
    energy = StandInEnergy(channels)
    if energy_state is not None:
        energy.load_state_dict(energy_state)
    settings = dict(step_size=0.1, noise_scale=0.05, langevin_steps=3, alpha=0.2, buffer_size=8, sample_steps=4)
    settings.update(config)
    return model_class(energy, image_size=image_size, channels=channels, **settings).to(DEVICE)


def run_case(model_class, case: dict):
    """Run one stored case; returns (what is compared with case["expected"], the noise seams).

    For update_buffer that is the buffer after the call; for sample_buffer the x it returns;
    for loss the vector [loss, dloss/dweights...] (the gradient shows which energies it trains)."""
    config = case["config"]
    model = _build(model_class, config["channels"], config["image_size"], case["energy"],
                   **{k: v for k, v in config.items() if k not in ("channels", "image_size")})
    model.replay.copy_(case["replay"].to(DEVICE))
    seams = {"noise_like": NoiseSequence("noise_like", case["noise_like"], case["noise_like_calls"]),
             "uniform_like": NoiseSequence("uniform_like", case["uniform_like"], case["uniform_like_calls"])}
    model.noise_like, model.uniform_like = seams["noise_like"], seams["uniform_like"]
    model.draw_replay = ReplaySequence(case["draw_replay"])
    args = [a.to(DEVICE, copy=True) if isinstance(a, torch.Tensor) else a for a in case["args"]]
    function = case["function"]
    out = _call(function, getattr(model, function), *args)
    if function == "update_buffer":
        out = model.replay.detach().clone()
    elif function == "sample_buffer":
        if not (isinstance(out, tuple) and len(out) == 2):
            _fail(f"sample_buffer returned {_describe(out)}; it must return the pair (x, idx)")
        out = out[0]
    elif function == "loss" and isinstance(out, torch.Tensor) and out.shape == ():
        if not out.requires_grad:
            _fail(f"loss [{case['label']}]: the loss carries no gradient to the weights (requires_grad False): compute it "
                  "from the energies with torch operations, outside torch.no_grad()")
        params = list(model.energy_net.parameters())
        grads = torch.autograd.grad(out, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        out = torch.cat([out.detach().reshape(1)] + [g.detach().flatten() for g in grads])
    return out, seams


def _reference_failures(model_class, function: str, reference: dict) -> bool:
    """Whether any reference case of `function` fails (for "fix that one first" hints)."""
    for case in reference["cases"].get(function, []):
        try:
            got, _ = run_case(model_class, case)
        except pytest.fail.Exception:
            return True
        if _difference(WHAT[function], got, case["expected"].to(DEVICE)) is not None:
            return True
    return False


def _loss_difference(got, expected: torch.Tensor) -> str | None:
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return _difference("the loss", got, expected[0])
    problem = _difference("the loss", got[0], expected[0])
    if problem is not None:
        return problem
    if _difference("", got[1:], expected[1:]) is not None:
        return ("the loss has the right value but the wrong gradient with respect to the energy's weights: "
                "both E(x_real) and E(x_fake) must be computed with the weights in the graph (detach x_fake, "
                "not its energy)")
    return None


def check_reference(model_class, case: dict) -> None:
    """Run one stored case and compare with the stored output; explain any difference."""
    if "missing" in case:
        _fail(case["missing"])
    function = case["function"]
    got, seams = run_case(model_class, case)
    expected = case["expected"].to(DEVICE)
    problem = _loss_difference(got, expected) if function == "loss" else _difference(WHAT[function], got, expected)
    if problem is None:
        return
    lines = [f"{function} [{case['label']}]: {problem}"]
    known = _known_mistakes(function, got, case)
    lines += [line for _, line in known]
    blame = ()
    if all(culprit != function for culprit, _ in known):  # no mistake of this function itself
        for name, seam in seams.items():
            calls, needed = len(seam.calls), seam.needed
            if calls != needed:
                lines.append(f"{name} was called {_times(calls)}; this case needs {_times(needed)}"
                             + (" (noise drawn elsewhere, e.g. torch.randn, bypasses the seam the grader uses)"
                                if calls < needed else ""))
        again, _ = run_case(model_class, case)
        if isinstance(again, torch.Tensor) and isinstance(got, torch.Tensor) and not _close(again, got):
            lines.append(f"{function} gives different results for the same inputs and the same noise: it draws "
                         "randomness elsewhere (torch.randn, rand, randint). Draw through self.noise_like, "
                         "self.uniform_like and self.draw_replay.")
        blame = tuple(d for d in DEPENDS_ON.get(function, ()) if _reference_failures(model_class, d, case["reference"]))
        lines += [f"Note: {d}, which {function} calls, fails its own tests: fix {d} first." for d in blame]
    _fail(lines, blame)


# ----------------------------------------------------------------------------
# Spies: what forward, langevin_sample and sample pass to the functions they call
# ----------------------------------------------------------------------------


def _bind(function: str, names: tuple[str, ...], args, kwargs) -> dict:
    signature = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    try:
        return signature.bind(*args, **kwargs).arguments
    except TypeError as error:
        raise GradingError(f"{function} was called with the wrong arguments ({error}); call it as "
                           f"{function}({', '.join(names)})")


def _spy(model, function: str, names: tuple[str, ...], result) -> list[dict]:
    """Replace model.<function> with a spy that records its arguments and returns result(bound, k)."""
    calls: list[dict] = []

    def spy(*args, **kwargs):
        bound = _bind(function, names, args, kwargs)
        bound["out"] = result(bound, len(calls) + 1)
        calls.append(bound)
        return bound["out"]

    setattr(model, function, spy)
    return calls


def _images(config: dict, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (config["B"], config["C"], config["size"], config["size"])
    return (torch.rand(shape, generator=generator) * 1.8 - 0.9).to(DEVICE)


# ----------------------------------------------------------------------------
# The class under test, and an in-process entry point for the project's own tests
# ----------------------------------------------------------------------------


@pytest.fixture
def model_class():
    """The class under test: your EnergyModel."""
    return EnergyModel


def run_checks(model_class, reference: dict | None = None) -> dict[str, str | None]:
    """Every check of this file on `model_class`: {test id: None if it passed, else the failure text}."""
    reference = reference or load_reference()
    results = {}
    for name, test in globals().items():
        if not (name.startswith("test_") and callable(test)):
            continue
        (mark,) = [m for m in getattr(test, "pytestmark", []) if m.name == "parametrize"]
        argument = mark.args[0]
        if argument == "case":
            parameters = [(c["id"], c) for c in reference["cases"].get(name[len("test_"):], [])]
        else:
            parameters = [(p.id, p.values[0]) for p in mark.args[1]]
        for param_id, parameter in parameters:
            try:
                test(model_class, parameter)
                results[f"{name}[{param_id}]"] = None
            except pytest.fail.Exception as failure:
                results[f"{name}[{param_id}]"] = str(failure.msg)
    return results
