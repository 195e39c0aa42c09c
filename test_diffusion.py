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
- Each function runs twice on the same object (kept noise or a buffer changed in place shows),
  from torch's default settings (a function that changes them fails), and once more on a
  stand-in GPU: a tensor created without `device=` fails here instead of on Colab.
- Each test first runs your code in an `observe_*` function (below the tests), which returns
  what it saw; the test then judges that.

Reading a failure
Each failure names the function and the case, then says what differs: the largest error,
where it is (example, channel, pixel) and your value next to the expected one. When your
output equals the output of a common mistake stored in the reference file (in every case
where it is stored), the message names the mistake and the equation it breaks.
"<name>: not implemented yet" means the function still raises NotImplementedError.
Tolerance: |yours - expected| <= 1e-5 + 1e-5 max|expected| (the largest entry sets the scale).

Replay a failing case in Python, e.g. test_q_sample[t_mixed-B6-C3-8x8-T50]:

    import test_diffusion as td
    case = td.reference_case("q_sample", "t_mixed-B6-C3-8x8-T50")
    diffusion = td.build_for_case(td.GaussianDiffusion, case)   # stand-in model, fixed noise_like
    x_t = diffusion.q_sample(*case["args"])
    print((x_t - case["expected"]).abs().max())

Environment variables
    DIFFUSION_REFERENCE     another reference file (the autograder's hidden set uses this)
    DIFFUSION_TEST_DEVICE   run on another device, e.g. cuda (default: cpu)
    DIFFUSION_TEST_TIMEOUT  seconds one call of your function may take (default: 10)
"""

from __future__ import annotations

import inspect
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

import grading
from grading import GradingError, call, close, dtype_name, fail, observation, observe, times

FUNCTIONS = ("q_sample", "p_losses", "forward", "p_sample", "p_sample_loop", "sample")
# End to end, these run your own versions of the functions they call, innermost first. (p_losses
# does not: its tests hand it the right x_t, so each function is judged on its own.)
DEPENDS_ON = {"p_sample_loop": ("p_sample",), "sample": ("p_sample", "p_sample_loop")}
grading.register(__file__, FUNCTIONS, hints=[
    (r"The size of tensor a \(\d+\) must match the size of tensor b \(\d+\)",
     "A schedule value indexed with t has shape [B] and does not broadcast against [B, C, H, W] images: "
     "read it with extract(a, t, x.shape), which reshapes it to [B, 1, 1, 1]."),
])
GaussianDiffusion = grading.import_student("diffusion", "GaussianDiffusion")

DEFAULT_REFERENCE = Path(__file__).resolve().parent / "data" / "reference" / "public.pt"
REFERENCE = grading.load_reference(os.environ.get("DIFFUSION_REFERENCE") or DEFAULT_REFERENCE)
DEVICE = torch.device(os.environ.get("DIFFUSION_TEST_DEVICE", "cpu"))

# An infinite loop fails its call after DIFFUSION_TEST_TIMEOUT s; this stops a test that makes many calls.
pytestmark = pytest.mark.timeout(max(60.0, 6 * grading.TIME_LIMIT_S))


def reference_cases(function: str) -> list[dict]:
    return REFERENCE["cases"].get(function, [])


def reference_case(function: str, case_id: str) -> dict:
    return next(c for c in reference_cases(function) if c["id"] == case_id)


def case_id(case: dict) -> str:
    return case["id"]


def shapes(*configs: dict) -> list[dict]:
    """Settings of a spy test: batch B, channels C, image size, T (a T other than 50 catches a hard-coded 50)."""
    return list(configs)


def config_id(config: dict) -> str:
    return f"B{config['B']}-C{config['C']}-{config['size']}x{config['size']}-T{config['T']}"


FORWARD_SHAPES = shapes(dict(B=5, C=3, size=4, T=50), dict(B=3, C=1, size=8, T=7))
T_SHAPES = shapes(dict(B=4096, C=1, size=2, T=50), dict(B=600, C=1, size=2, T=3))
LOOP_SHAPES = shapes(dict(B=2, C=3, size=8, T=50), dict(B=3, C=1, size=4, T=5))
SAMPLE_SHAPES = shapes(dict(B=3, C=3, size=8, T=10), dict(B=2, C=1, size=16, T=10))
GPU_SHAPE = dict(B=2, C=3, size=4, T=5)


@pytest.fixture
def diffusion_class():
    """The class under test: your GaussianDiffusion."""
    return GaussianDiffusion


# ----------------------------------------------------------------------------
# The tests, function by function (the machinery they use follows below)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", reference_cases("q_sample"), ids=case_id)
def test_q_sample(diffusion_class, case):
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise, with t per example (0, 1, T-1 and mixed)."""
    check_reference(diffusion_class, case)


def test_q_sample_on_a_gpu(diffusion_class):
    """q_sample keeps everything on its inputs' device."""
    check_on_gpu(diffusion_class, "q_sample")


@pytest.mark.parametrize("case", reference_cases("p_losses"), ids=case_id)
def test_p_losses(diffusion_class, case):
    """mean |noise - model(x_t, t)| with the stand-in model, with a gradient; q_sample is a spy returning the right x_t."""
    check_reference(diffusion_class, case)


def test_p_losses_on_a_gpu(diffusion_class):
    check_on_gpu(diffusion_class, "p_losses")


@pytest.mark.parametrize("config", FORWARD_SHAPES, ids=config_id)
def test_forward_uses_given_noise(diffusion_class, config):
    """forward(x_0, noise) passes x_0 and that very noise to p_losses and returns its loss."""
    x_0, noise = images(config, 1), images(config, 2)
    seen = observe(observe_forward, diffusion_class, config, x_0, noise, 1)
    call_seen = check_forward_result(seen)[0]
    if not torch.equal(call_seen["x_0"], x_0):
        fail("forward: the x_0 passed to p_losses is not the x_0 that forward was given")
    if not isinstance(call_seen["noise"], torch.Tensor) or not torch.equal(call_seen["noise"], noise):
        fail("forward ignored the noise it was given: when `noise` is not None, pass it to p_losses unchanged "
             "(this is how the trainer and the grader fix the noise)")


@pytest.mark.parametrize("config", FORWARD_SHAPES, ids=config_id)
def test_forward_draws_noise_with_noise_like(diffusion_class, config):
    """forward(x_0) draws its noise with self.noise_like(x_0.shape, x_0.device) and uses it."""
    x_0 = images(config, 3)
    seen = observe(observe_forward, diffusion_class, config, x_0, None, 1)
    call_seen = check_forward_result(seen)[0]
    if not seen["noise_like"]:
        fail("forward(x_0) never called self.noise_like: draw the noise with self.noise_like(x_0.shape, x_0.device), "
             "not torch.randn / randn_like (noise_like is the one seam the grader and trainer use)")
    shape, device = seen["noise_like"][-1]
    if tuple(shape) != tuple(x_0.shape):
        fail(f"forward asked noise_like for shape {list(shape)}; the noise must have x_0's shape {list(x_0.shape)}")
    if device not in ("None", str(x_0.device)):
        fail(f"forward asked noise_like for noise on {device}; it belongs on x_0's device {x_0.device}")
    if not any(isinstance(call_seen["noise"], torch.Tensor) and torch.equal(call_seen["noise"], z)
               for z in seen["noise_like_returned"]):
        fail("forward did not pass the noise drawn by noise_like to p_losses")


@pytest.mark.parametrize("config", T_SHAPES, ids=config_id)
def test_forward_draws_t(diffusion_class, config):
    """t: a [B] long tensor on x_0's device, one uniform draw from 0..T-1 per example, new at every call."""
    timesteps, batch = config["T"], config["B"]
    x_0 = images(config, 4)
    seen = observe(observe_forward, diffusion_class, config, x_0, images(config, 5), 2)
    calls = check_forward_result(seen)
    t = calls[0]["t"]
    if not isinstance(t, torch.Tensor):
        fail(f"forward passed t = {t!r} to p_losses; t must be a [B] long tensor, one step per example")
    if t.dtype != torch.long:
        fail(f"forward drew t with dtype {dtype_name(t)}; time steps are indexes: use torch.randint(..., dtype=torch.long)")
    if tuple(t.shape) != (batch,):
        fail(f"forward drew t of shape {list(t.shape)}; it needs shape [B] = [{batch}], one step per example")
    if t.device != x_0.device:
        fail(f"forward drew t on {t.device} while x_0 is on {x_0.device}; create t on (or move it to) x_0's device")
    low, high = int(t.min()), int(t.max())
    if low == high:
        fail(f"forward gave every example the same t = {low}; draw one t per example (shape [B]) so a batch mixes steps")
    if low < 0 or high > timesteps - 1:
        hint = " (the slides' 1-indexed t; in code t = 0..T-1)" if low >= 1 and high == timesteps else ""
        fail(f"forward drew t in {low}..{high}, outside 0..T-1 = 0..{timesteps - 1}{hint}: use torch.randint(0, T, (B,))")
    counts = torch.bincount(t.cpu(), minlength=timesteps)
    if counts[timesteps - 1] == 0:
        fail(f"forward: in {batch} draws t never took the value T-1 = {timesteps - 1}: torch.randint's upper bound is "
             "exclusive, so draw with torch.randint(0, T, (B,)), T = self.num_timesteps")
    if counts[0] == 0:
        fail(f"forward: in {batch} draws t never took the value 0: t runs over 0..T-1 = 0..{timesteps - 1}")
    expected = batch / timesteps  # a fair draw stays far inside [expected / 4, expected * 2.5] (odds below 1e-9)
    uneven = [k for k in range(timesteps) if not expected / 4 <= counts[k] <= expected * 2.5]
    if uneven:
        fail(f"forward's t is far from uniform on 0..{timesteps - 1}: value {uneven[0]} came up {int(counts[uneven[0]])} "
             f"times in {batch} draws (about {expected:.0f} expected); draw t ~ Uniform{{0, ..., T-1}}")
    again = calls[1]["t"]
    if isinstance(again, torch.Tensor) and again.shape == t.shape and torch.equal(again, t):
        fail("forward drew exactly the same t on two calls: it must draw new steps every time "
             "(do not seed or keep t on self)")


def test_forward_on_a_gpu(diffusion_class):
    check_on_gpu(diffusion_class, "forward")


@pytest.mark.parametrize("case", reference_cases("p_sample"), ids=case_id)
def test_p_sample(diffusion_class, case):
    """One step of Algorithm 2 at t_index 0, 1, T-1 and in between; noise from noise_like."""
    check_reference(diffusion_class, case)


def test_p_sample_on_a_gpu(diffusion_class):
    check_on_gpu(diffusion_class, "p_sample")


@pytest.mark.parametrize("config", LOOP_SHAPES, ids=config_id)
def test_p_sample_loop_steps(diffusion_class, config):
    """p_sample_loop calls p_sample for t_index = T-1, ..., 0, feeding each output to the next step."""
    timesteps, batch = config["T"], config["B"]
    img = images(config, 6)
    seen = observe(observe_loop, diffusion_class, config, img)
    steps, got = seen["steps"], seen["got"]
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
        fail(f"p_sample_loop called p_sample with t_index = {shown}; expected T-1, ..., 0 = "
             f"{timesteps - 1}, ..., 0 ({timesteps} steps)" + (f": {named}" if named else ""))
    for k, step in enumerate(steps):
        t, t_index = step["t"], step["t_index"]
        if not isinstance(t_index, int):
            fail(f"p_sample_loop passed t_index as {grading.type_name(t_index)}; pass an int (the loop counter)")
        if not isinstance(t, torch.Tensor) or t.dtype != torch.long or tuple(t.shape) != (batch,) or t.device != img.device:
            described = f"{dtype_name(t)} {list(t.shape)} on {t.device}" if isinstance(t, torch.Tensor) else repr(t)
            fail(f"p_sample_loop passed t = {described} at t_index {t_index}; t must be a [B] = [{batch}] long tensor "
                 f"on the image's device, every entry equal to t_index")
        if not bool((t == t_index).all()):
            hint = " (t built once before the loop?)" if bool((t == steps[0]["t_index"]).all()) else ""
            fail(f"p_sample_loop passed t = {t.tolist()[:4]}... with t_index = {t_index}; every entry of t must equal t_index{hint}")
        previous = img if k == 0 else steps[k - 1]["out"]
        if step["x"].shape != previous.shape or not torch.equal(step["x"], previous):
            source = "img (x_T)" if k == 0 else "the previous step's output"
            fail(f"p_sample_loop: the step at t_index {t_index} did not start from {source}; "
                 "each step continues from the last: x = p_sample(x, t, t_index)")
    last = steps[-1]["out"]
    if not isinstance(got, torch.Tensor) or got.shape != last.shape:
        fail(f"p_sample_loop returned {grading.type_name(got) if not isinstance(got, torch.Tensor) else list(got.shape)}; "
             "it must return the last step's output, shaped like img")
    if not torch.allclose(got, last, rtol=0, atol=1e-6):
        if torch.allclose(got, (last + 1) / 2, rtol=0, atol=1e-6):
            fail("p_sample_loop returned x_0 mapped to [0, 1]; keep x_0 in [-1, 1] here (sample does the mapping)")
        fail("p_sample_loop must return the output of the last step (t_index 0), unchanged")


@pytest.mark.parametrize("case", reference_cases("p_sample_loop"), ids=case_id)
def test_p_sample_loop(diffusion_class, case):
    """The whole reverse process from a fixed x_T with fixed noise, through your p_sample."""
    check_reference(diffusion_class, case)


def test_p_sample_loop_on_a_gpu(diffusion_class):
    check_on_gpu(diffusion_class, "p_sample_loop")


@pytest.mark.parametrize("config", SAMPLE_SHAPES, ids=config_id)
def test_sample_calls(diffusion_class, config):
    """sample draws x_T = noise_like((B, C, H, W), device), runs p_sample_loop on it, maps to [0, 1]."""
    batch, channels, size = config["B"], config["C"], config["size"]
    seen = observe(observe_sample, diffusion_class, config)
    got, calls = seen["got"], seen["loop_calls"]
    shape = (batch, channels, size, size)
    if not seen["noise_like"]:
        fail("sample never called self.noise_like: draw x_T with self.noise_like((B, C, H, W), device), "
             "not torch.randn (noise_like is the seam the grader uses)")
    asked, device = seen["noise_like"][0]
    if tuple(asked) != shape:
        fail(f"sample asked noise_like for shape {list(asked)}; x_T needs (B, C, H, W) = {list(shape)} "
             "(channels = self.channels, H = W = self.image_size)")
    if device not in ("None", seen["buffers_device"]):
        fail(f"sample asked noise_like for noise on {device}; sample on the buffers' device, self.device")
    x_T = seen["noise_like_returned"][0]
    if isinstance(got, torch.Tensor) and close(got, (chain(x_T, config["T"]) + 1) / 2):
        return  # through self.p_sample_loop or its own loop over self.p_sample: the same x_0, mapped
    steps = seen["steps"]
    if len(calls) > 1 or (not calls and not steps):
        fail(f"sample called p_sample_loop {times(len(calls))}; call it once, on x_T")
    start, x_0 = (calls[0]["img"], calls[0]["out"]) if calls else (steps[0]["x"], steps[-1]["out"])
    if not torch.equal(start, x_T):
        fail("sample did not pass the x_T drawn by noise_like to p_sample_loop")
    if not calls and [s["t_index"] for s in steps] != list(range(config["T"] - 1, -1, -1)):
        fail("sample's own loop must call p_sample for t_index = T-1, ..., 0, each step on the last one's output; "
             "or call self.p_sample_loop(x_T)")
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != shape:
        fail(f"sample returned {list(got.shape) if isinstance(got, torch.Tensor) else grading.type_name(got)}; "
             f"expected {list(shape)}")
    if torch.allclose(got, x_0, rtol=0, atol=1e-6):
        fail("sample returned results in [-1, 1] instead of [0, 1]: map x_0 with (x_0 + 1) / 2")
    if torch.allclose(got, x_0.clamp(0, 1), rtol=0, atol=1e-6):
        fail("sample clamped x_0 to [0, 1] instead of mapping it: use (x_0 + 1) / 2, which keeps the negative half")
    fail("sample must return (p_sample_loop(x_T) + 1) / 2: images in [0, 1]")


@pytest.mark.parametrize("case", reference_cases("sample"), ids=case_id)
def test_sample(diffusion_class, case):
    """sample end to end: x_T from noise_like, your loop and p_sample, mapped to [0, 1]."""
    check_reference(diffusion_class, case)


def test_sample_on_a_gpu(diffusion_class):
    check_on_gpu(diffusion_class, "sample")


# ----------------------------------------------------------------------------
# Judging reference cases: fixed inputs, fixed noise, stored outputs
# ----------------------------------------------------------------------------


WHAT = {"q_sample": "x_t", "p_losses": "the loss", "p_sample": "x_{t-1}", "p_sample_loop": "x_0", "sample": "the image batch"}
_CASES = grading.Memo()


def case_outputs(diffusion_class, case: dict) -> dict:
    """What `observe_case` saw on this case (computed once per class and case)."""
    key = (id(case["reference"]), case["function"], case["id"])
    return _CASES.get(diffusion_class, key, lambda: observe(
        observe_case, diffusion_class, case["function"], case_inputs(case)))


def case_inputs(case: dict) -> dict:
    """A case without its expected outputs: what the code under test may see."""
    return {k: case[k] for k in ("config", "model", "args", "noise_like", "noise_like_calls", "q_sample_returns")
            if k in case}


def check_reference(diffusion_class, case: dict) -> None:
    """Compare one stored case with your output; explain any difference."""
    function = case["function"]
    seen = case_outputs(diffusion_class, case)
    got, needed = seen["outputs"][0], case["noise_like_calls"]
    label = f"{function} [{case['label']}]"
    problem = grading.difference(WHAT[function], got, case["expected"].to(DEVICE))
    if problem is not None:
        lines = [f"{label}: {problem}"]
        known = known_mistakes(diffusion_class, function, got, case)
        lines += [line for _, line in known]
        blame = ()
        if all(culprit != function for culprit, _ in known):  # no mistake of this function itself
            calls = seen["noise_calls"][0]
            if calls != needed:
                lines.append(f"noise_like was called {times(calls)}; this case needs {times(needed)}"
                             + (" (noise drawn elsewhere, e.g. torch.randn, bypasses the seam the grader uses)"
                                if calls < needed else ""))
            if isinstance(got, torch.Tensor) and not close(seen["outputs"][1], got):
                lines.append(f"{function} gives different results for the same inputs and the same noise_like values: it "
                             "draws randomness elsewhere (torch.randn, randn_like, rand). Draw every noise with "
                             "self.noise_like(shape, device).")
            blame = failing_dependencies(diffusion_class, function, case["reference"])
            lines += [f"Note: {d}, which {function} calls, fails its own tests: fix {d} first." for d in blame]
        fail(lines, blame)
    if seen["requires_grad"] is False:
        fail(f"{label}: the loss has no gradient (computed under torch.no_grad(), or detached), so training could not "
             "learn from it: compute it with gradients on")
    first, second = seen["noise_calls"]
    if second != first:
        fail(f"{label}: called a second time on the same object, it called noise_like {times(second)} instead of "
             f"{times(first)} (noise kept on self from an earlier call?)")
    if not close(seen["outputs"][1], got):
        changed = f" It changed {', '.join(seen['changed_buffers'])} in place." if seen["changed_buffers"] else ""
        fail(f"{label}: called a second time on the same object with the same inputs and noise, it returns something "
             f"else: it keeps state between calls or changes the object.{changed}")


def known_mistakes(diffusion_class, function: str, got, case: dict) -> list[tuple[str, str]]:
    """(function the mistake is in, sentence naming it) for each stored mistake your outputs equal, in every
    case of `function` where that mistake is stored."""
    if not isinstance(got, torch.Tensor):
        return []
    got = got.detach().cpu()
    reference, found = case["reference"], []
    for key, output in case["mistakes"].items():
        if not (got.dtype == output.dtype and close(got, output)):
            continue
        others = [c for c in reference["cases"][function] if key in c["mistakes"] and c is not case]
        if all(close(_output_or_none(diffusion_class, c), c["mistakes"][key]) for c in others):
            mistake = reference["mistakes"][key]
            where = "" if mistake["function"] == function else f" in {mistake['function']}"
            found.append((mistake["function"], f"This matches a known mistake{where}: {mistake['title']}.\n  {mistake['why']}"))
    return found


def _output_or_none(diffusion_class, case: dict):
    try:
        return case_outputs(diffusion_class, case)["outputs"][0]
    except pytest.fail.Exception:
        return None


def failing_dependencies(diffusion_class, function: str, reference: dict) -> tuple[str, ...]:
    """The functions `function` calls that fail a reference case on their own (not because of another one)."""
    failing = []
    for dependency in DEPENDS_ON.get(function, ()):
        for case in reference["cases"].get(dependency, []):
            try:
                check_reference(diffusion_class, case)
            except pytest.fail.Exception as failure:
                if not set(getattr(failure, "blame", ())) - {dependency}:
                    failing.append(dependency)
                    break
    return tuple(failing)


def check_on_gpu(diffusion_class, function: str) -> None:
    """Run `function` with the model, its buffers and its inputs on a stand-in GPU."""
    seen = observe(observe_on_gpu, diffusion_class, function, GPU_SHAPE)
    gpu = seen["gpu"]
    if seen["inconclusive"]:
        return  # your code reads tensor values, which the stand-in GPU cannot do: its other tests cover it
    how = "; this passes on a CPU but crashes on a GPU (the test runs your code on a stand-in GPU)"
    for name, device in seen["created"].items():
        if device != gpu:
            fail(f"{function}: {name} was created on {device} while {seen['inputs']} is on the GPU; {seen['fix']}{how}")
    if seen["out"] not in (gpu, "not a tensor"):
        fail(f"{function} returned a tensor on {seen['out']} while its inputs are on the GPU{how}")


# ----------------------------------------------------------------------------
# Observations: run your code, record what it did
# ----------------------------------------------------------------------------


def build(diffusion_class, channels: int, image_size: int, timesteps: int, model_state=None, device=DEVICE):
    model = StandInModel(channels, timesteps)
    if model_state is not None:
        model.load_state_dict(model_state)
    diffusion = diffusion_class(model, image_size=image_size, channels=channels, timesteps=timesteps)
    return diffusion.to(device) if device is not None else diffusion


def build_for_case(diffusion_class, case: dict):
    """The object a reference case runs on: the stand-in model with the case's weights, its noise_like
    (a NoiseSequence of the case's noise), and for p_losses a q_sample spy that returns the right x_t."""
    config = case["config"]
    diffusion = build(diffusion_class, config["channels"], config["image_size"], config["timesteps"], case["model"])
    diffusion.noise_like = NoiseSequence(case["noise_like"], case["noise_like_calls"])
    if "q_sample_returns" in case:
        spy_q_sample(diffusion, [a.to(DEVICE) for a in case["args"]], case["q_sample_returns"])
    return diffusion


@observation
def observe_case(diffusion_class, function: str, case: dict) -> dict:
    """Run `function` on a reference case's inputs twice, on the same object, each time with fresh noise."""
    diffusion = build_for_case(diffusion_class, case)
    buffers = {name: b.clone() for name, b in diffusion.named_buffers()}
    seen = {"outputs": [], "noise_calls": [], "requires_grad": None}
    for _ in range(2):
        diffusion.noise_like = NoiseSequence(case["noise_like"], case["noise_like_calls"])
        args = [a.to(DEVICE, copy=True) if isinstance(a, torch.Tensor) else a for a in case["args"]]
        out = call(function, getattr(diffusion, function), *args)
        seen["outputs"].append(out)
        seen["noise_calls"].append(len(diffusion.noise_like.calls))
        if function == "p_losses" and seen["requires_grad"] is None:
            seen["requires_grad"] = isinstance(out, torch.Tensor) and out.requires_grad
    seen["changed_buffers"] = [name for name, b in diffusion.named_buffers()
                               if name in buffers and not (b.shape == buffers[name].shape and torch.equal(b, buffers[name]))]
    return seen


@observation
def observe_forward(diffusion_class, config: dict, x_0: torch.Tensor, noise, repeats: int) -> dict:
    """forward(x_0, noise) `repeats` times on one object, with spies for p_losses and noise_like."""
    diffusion = build(diffusion_class, config["C"], config["size"], config["T"])
    diffusion.noise_like = noise_like = RecordingNoise()
    calls = spy_p_losses(diffusion)
    got = []
    for _ in range(repeats):
        arguments = (x_0.clone(),) if noise is None else (x_0.clone(), noise.clone())
        got.append(call("forward", diffusion.forward, *arguments))
    return {"got": got, "p_losses_calls": calls, "noise_like": noise_like.calls, "noise_like_returned": noise_like.returned}


def check_forward_result(seen: dict) -> list[dict]:
    calls = seen["p_losses_calls"]
    if len(calls) != len(seen["got"]):
        fail(f"forward called p_losses {times(len(calls))} in {times(len(seen['got']))} of its calls; it should call "
             "self.p_losses(x_0, t, noise) exactly once and return its loss")
    for got, call_seen in zip(seen["got"], calls):
        if not (isinstance(got, torch.Tensor) and got.shape == () and torch.equal(got, call_seen["loss"])):
            fail("forward must return the loss that p_losses returned (a scalar tensor), unchanged")
    return calls


@observation
def observe_loop(diffusion_class, config: dict, img: torch.Tensor) -> dict:
    diffusion = build(diffusion_class, config["C"], config["size"], config["T"])
    diffusion.noise_like = RecordingNoise()
    steps = spy_p_sample(diffusion)
    got = call("p_sample_loop", diffusion.p_sample_loop, img.clone())
    return {"got": got, "steps": steps}


@observation
def observe_sample(diffusion_class, config: dict) -> dict:
    diffusion = build(diffusion_class, config["C"], config["size"], config["T"])
    diffusion.noise_like = noise_like = RecordingNoise()
    calls, steps = spy_p_sample_loop(diffusion), spy_p_sample(diffusion)
    got = call("sample", diffusion.sample, config["B"])
    return {"got": got, "loop_calls": calls, "steps": steps, "noise_like": noise_like.calls,
            "noise_like_returned": noise_like.returned, "buffers_device": str(diffusion.alphas.device)}


@observation
def observe_on_gpu(diffusion_class, function: str, config: dict) -> dict:
    """Run `function` once on the stand-in GPU; the devices of what it created and returned."""
    batch, channels, size, timesteps = config["B"], config["C"], config["size"], config["T"]
    seen = {"inconclusive": False, "created": {}, "out": "not a tensor", "inputs": "x", "fix": ""}
    with grading.fake_gpu() as gpu:
        seen["gpu"] = str(gpu)
        diffusion = grading.to_device(build(diffusion_class, channels, size, timesteps, device=None), gpu)
        diffusion.noise_like = noise_like = RecordingNoise()
        x = torch.zeros(batch, channels, size, size, device=gpu)
        t = torch.full((batch,), timesteps - 1, dtype=torch.long, device=gpu)
        try:
            if function == "q_sample":
                out = call(function, diffusion.q_sample, x, t, x.clone())
            elif function == "p_losses":
                spy_q_sample(diffusion, None, x)
                out = call(function, diffusion.p_losses, x, t, x.clone())
            elif function == "forward":
                calls = spy_p_losses(diffusion)
                out = call(function, diffusion.forward, x)
                seen.update(inputs="x_0", fix="create it on x_0's device (t: torch.randint(0, T, (B,), device=x_0.device); "
                                              "the noise: self.noise_like(x_0.shape, x_0.device))")
                if calls and isinstance(calls[0]["t"], torch.Tensor):
                    seen["created"]["t"] = str(calls[0]["t"].device)
                if noise_like.calls:
                    seen["created"]["the noise"] = grading.device_of(noise_like.calls[0][1])
            elif function == "p_sample":
                out = call(function, diffusion.p_sample, x, t, timesteps - 1)
            elif function == "p_sample_loop":
                steps = spy_p_sample(diffusion)
                out = call(function, diffusion.p_sample_loop, x)
                seen.update(inputs="img", fix="create it with device=img.device (e.g. torch.full((B,), t_index, device=img.device))")
                wrong = [s for s in steps if isinstance(s["t"], torch.Tensor) and str(s["t"].device) != str(gpu)]
                seen["created"] = {"t": str(wrong[0]["t"].device)} if wrong else {}
            else:
                spy_p_sample_loop(diffusion)
                out = call(function, diffusion.sample, batch)
                seen.update(inputs="the model", fix="draw it with self.noise_like(shape, self.device)")
                seen["created"] = {"x_T": grading.device_of(noise_like.calls[0][1])} if noise_like.calls else {}
        except grading.Inconclusive:
            seen["inconclusive"] = True
            return seen
        if isinstance(out, torch.Tensor):
            seen["out"] = str(out.device)
    return seen


# ----------------------------------------------------------------------------
# The stand-in noise predictor, the fixed noise and the spies
# ----------------------------------------------------------------------------


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
                f"the model was called with a {dtype_name(x_t)} x_t, but the network's weights are {dtype_name(self.mix)}: "
                "keep x_t in float32 (the U-Net would fail here)")
        if not isinstance(t, torch.Tensor):
            raise GradingError(f"the model was called with t = {t!r}; it takes t as a [B] long tensor, one step per image")
        if t.dtype != torch.long:
            raise GradingError(f"the model was called with t of dtype {dtype_name(t)}; time steps are integer indexes (torch.long)")
        if t.dim() != 1 or t.shape[0] != x_t.shape[0]:
            raise GradingError(f"the model was called with t of shape {list(t.shape)}; it needs [B] = [{x_t.shape[0]}], one step per image")
        if t.device != x_t.device:
            raise GradingError(f"the model was called with t on {t.device} but x_t on {x_t.device}; put t on x_t's device")
        if t.numel() and not grading.is_fake_mode():  # the stand-in GPU has no values to read
            if int(t.min()) < 0 or int(t.max()) >= timesteps:
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
            raise GradingError(f"noise_like was called {times(k)}; this case needs {times(self.needed)}")
        z = self.tensors[k - 1]
        if tuple(z.shape) != shape:
            raise GradingError(f"noise_like call {k} asked for shape {list(shape)}; the noise needed here has shape {list(z.shape)}")
        return z.to(device if device is not None else DEVICE, copy=True)


class RecordingNoise:
    """A `noise_like` that records its calls and returns fixed pseudo-random tensors of any shape."""

    def __init__(self):
        self.calls: list[tuple[tuple[int, ...], str]] = []
        self.returned: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self, shape, device=None) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        self.calls.append((shape, grading.device_of(device)))
        if grading.is_fake_mode():
            return torch.zeros(shape, device=device if device is not None else DEVICE)
        z = torch.randn(shape, generator=self.generator).to(device if device is not None else DEVICE)
        self.returned.append(z)
        return z


def bind(function: str, names: tuple[str, ...], args, kwargs) -> dict:
    signature = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    try:
        return signature.bind(*args, **kwargs).arguments
    except TypeError as error:
        raise GradingError(f"{function} was called with the wrong arguments ({error}); "
                           f"call it as {function}({', '.join(names)})") from None


def images(config: dict, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (config["B"], config["C"], config["size"], config["size"])
    return (torch.rand(shape, generator=generator) * 2 - 1).to(DEVICE)


def spy_q_sample(diffusion, args: list | None, x_t: torch.Tensor) -> None:
    """p_losses is checked on its own: q_sample is replaced by a spy that returns the right x_t
    (so a bug in your q_sample costs nothing here) and checks that it gets p_losses' arguments."""
    x_t = x_t.to(x_t.device if grading.is_fake_mode() else DEVICE)

    def q_sample(*a, **k):
        bound = bind("q_sample", ("x_0", "t", "noise"), a, k)
        for name, given in zip(("x_0", "t", "noise"), args or ()):
            got = bound[name]
            if not (isinstance(got, torch.Tensor) and got.shape == given.shape and torch.equal(got, given)):
                raise GradingError(f"called q_sample with another {name} than the one it was given; "
                                   "make x_t with self.q_sample(x_0, t, noise)")
        return x_t.clone()

    diffusion.q_sample = q_sample


def spy_p_losses(diffusion) -> list[dict]:
    """Replace p_losses with a spy that records its arguments and returns a known scalar."""
    calls = []

    def p_losses(*args, **kwargs):
        bound = bind("p_losses", ("x_0", "t", "noise"), args, kwargs)
        loss = torch.tensor(0.123 + len(calls) + 1, device=DEVICE if not grading.is_fake_mode() else grading.FAKE_GPU)
        calls.append(dict(bound, loss=loss))
        return loss

    diffusion.p_losses = p_losses
    return calls


def step_stand_in(x: torch.Tensor, t_index) -> torch.Tensor:
    """What the p_sample spy returns: a fixed map per step into (-1, 1), so that order and chaining show in
    the result and x_0 is a valid image (clamping it changes nothing)."""
    return torch.tanh(x) * 0.9 + 0.1 * math.sin(int(t_index) + 1)


def chain(img: torch.Tensor, timesteps: int) -> torch.Tensor:
    """What the p_sample_loop spy returns: the p_sample spy run for t_index = T-1, ..., 0, so that a sample
    that runs its own loop over self.p_sample gets the same x_0 as one that calls self.p_sample_loop."""
    for t_index in range(timesteps - 1, -1, -1):
        img = step_stand_in(img, t_index)
    return img


def spy_p_sample(diffusion) -> list[dict]:
    """Replace p_sample with step_stand_in; record copies of its arguments and outputs."""
    steps = []

    def p_sample(*args, **kwargs):
        bound = bind("p_sample", ("x", "t", "t_index"), args, kwargs)
        x = bound["x"]
        if not isinstance(x, torch.Tensor):
            raise GradingError(f"passed x = {type(x).__name__} to p_sample; pass the current image tensor")
        try:
            out = step_stand_in(x, bound["t_index"])
        except (TypeError, ValueError, RuntimeError):
            raise GradingError(f"passed t_index = {bound['t_index']!r} to p_sample; pass the loop counter, an int") from None
        steps.append(grading.snapshot(dict(bound, out=out)))
        return out

    diffusion.p_sample = p_sample
    return steps


def spy_p_sample_loop(diffusion) -> list[dict]:
    calls = []

    def p_sample_loop(*args, **kwargs):
        img = bind("p_sample_loop", ("img",), args, kwargs)["img"]
        if not isinstance(img, torch.Tensor):
            raise GradingError(f"passed {type(img).__name__} to p_sample_loop; pass x_T, a tensor")
        out = chain(img, diffusion.num_timesteps)
        calls.append(grading.snapshot({"img": img, "out": out}))
        return out

    diffusion.p_sample_loop = p_sample_loop
    return calls
