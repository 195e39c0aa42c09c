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
  what it saw; the test then judges that. The machinery they share with the later parts (the
  stand-in model, the fixed noise, the spies, the comparison) is in the grading/ package.

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

import os
from pathlib import Path

import pytest
import torch

import grading
from grading import call, checks, fail, observation, observe, times
from grading.cases import Part, case_id, run_twice
from grading.seams import Recording, Sequence
from grading.stand_ins import StandInModel, chain, spy_p_losses, spy_p_sample, spy_p_sample_loop, spy_q_sample

FUNCTIONS = ("q_sample", "p_losses", "forward", "p_sample", "p_sample_loop", "sample")
grading.register(__file__, FUNCTIONS, hints=[
    (r"The size of tensor a \(\d+\) must match the size of tensor b \(\d+\)",
     "A schedule value indexed with t has shape [B] and does not broadcast against [B, C, H, W] images: "
     "read it with extract(a, t, x.shape), which reshapes it to [B, 1, 1, 1]."),
])
GaussianDiffusion = grading.import_student("diffusion", "GaussianDiffusion")
DEVICE = torch.device(os.environ.get("DIFFUSION_TEST_DEVICE", "cpu"))
PART = Part(
    functions=FUNCTIONS, device=DEVICE,
    reference_file=os.environ.get("DIFFUSION_REFERENCE") or Path(__file__).resolve().parent / "data" / "reference" / "public.pt",
    what={"q_sample": "x_t", "p_losses": "the loss", "p_sample": "x_{t-1}", "p_sample_loop": "x_0", "sample": "the image batch"},
    inputs=("config", "model", "args", "noise_like", "noise_like_calls", "q_sample_returns"),
    # End to end, these run your own versions of the functions they call, innermost first. (p_losses
    # does not: its tests hand it the right x_t, so each function is judged on its own.)
    depends_on={"p_sample_loop": ("p_sample",), "sample": ("p_sample", "p_sample_loop")})
DEPENDS_ON, REFERENCE, reference_cases, reference_case = PART.depends_on, PART.reference, PART.cases, PART.case

# An infinite loop fails its call after DIFFUSION_TEST_TIMEOUT s; this stops a test that makes many calls.
pytestmark = pytest.mark.timeout(max(60.0, 6 * grading.TIME_LIMIT_S))


def config_id(config: dict) -> str:
    return f"B{config['B']}-C{config['C']}-{config['size']}x{config['size']}-T{config['T']}"


# Settings of the spy tests: batch B, channels C, image size, T (a T other than 50 catches a hard-coded 50).
FORWARD_SHAPES = [dict(B=5, C=3, size=4, T=50), dict(B=3, C=1, size=8, T=7)]
T_SHAPES = [dict(B=4096, C=1, size=2, T=50), dict(B=600, C=1, size=2, T=3)]
LOOP_SHAPES = [dict(B=2, C=3, size=8, T=50), dict(B=3, C=1, size=4, T=5)]
SAMPLE_SHAPES = [dict(B=3, C=3, size=8, T=10), dict(B=2, C=1, size=16, T=10)]
GPU_SHAPE = dict(B=2, C=3, size=4, T=5)


@pytest.fixture
def diffusion_class():
    """The class under test: your GaussianDiffusion."""
    return GaussianDiffusion


def check_reference(diffusion_class, case: dict) -> None:
    PART.check(diffusion_class, case)


def case_outputs(diffusion_class, case: dict) -> dict:
    return PART.outputs(diffusion_class, case)


def check_on_gpu(diffusion_class, function: str) -> None:
    """Run `function` with the model, its buffers and its inputs on a stand-in GPU."""
    checks.on_gpu(function, observe(observe_on_gpu, diffusion_class, function, GPU_SHAPE))


def images(config: dict, seed: int) -> torch.Tensor:
    return grading.stand_ins.images(config, seed, DEVICE)


# ----------------------------------------------------------------------------
# The tests, function by function (the observations they use follow below)
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
    call_seen = checks.forward_result(seen, "self.p_losses(x_0, t, noise)")[0]
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
    call_seen = checks.forward_result(seen, "self.p_losses(x_0, t, noise)")[0]
    checks.noise_drawn_for(seen, x_0, call_seen["noise"], "forward(x_0)")


@pytest.mark.parametrize("config", T_SHAPES, ids=config_id)
def test_forward_draws_t(diffusion_class, config):
    """t: a [B] long tensor on x_0's device, one uniform draw from 0..T-1 per example, new at every call."""
    x_0 = images(config, 4)
    seen = observe(observe_forward, diffusion_class, config, x_0, images(config, 5), 2)
    calls = checks.forward_result(seen, "self.p_losses(x_0, t, noise)")
    checks.time_steps(calls[0]["t"], calls[1]["t"], x_0, config["T"])


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
    img = images(config, 6)
    seen = observe(observe_loop, diffusion_class, config, img)
    checks.reverse_steps(seen["steps"], img, seen["got"], config["T"], "p_sample(x, t, t_index)")


@pytest.mark.parametrize("case", reference_cases("p_sample_loop"), ids=case_id)
def test_p_sample_loop(diffusion_class, case):
    """The whole reverse process from a fixed x_T with fixed noise, through your p_sample."""
    check_reference(diffusion_class, case)


def test_p_sample_loop_on_a_gpu(diffusion_class):
    check_on_gpu(diffusion_class, "p_sample_loop")


@pytest.mark.parametrize("config", SAMPLE_SHAPES, ids=config_id)
def test_sample_calls(diffusion_class, config):
    """sample draws x_T = noise_like((B, C, H, W), device), runs p_sample_loop on it (or its own loop over
    p_sample), maps to [0, 1]."""
    shape = (config["B"], config["C"], config["size"], config["size"])
    seen = observe(observe_sample, diffusion_class, config)
    if not seen["noise_like"]:
        fail("sample never called self.noise_like: draw x_T with self.noise_like((B, C, H, W), device), "
             "not torch.randn (noise_like is the seam the grader uses)")
    asked, device = seen["noise_like"][0]
    if tuple(asked) != shape:
        fail(f"sample asked noise_like for shape {list(asked)}; x_T needs (B, C, H, W) = {list(shape)} "
             "(channels = self.channels, H = W = self.image_size)")
    if device not in ("None", seen["buffers_device"]):
        fail(f"sample asked noise_like for noise on {device}; sample on the buffers' device, self.device")
    calls, steps, x_T = seen["loop_calls"], seen["steps"], seen["noise_like_returned"][0]
    if len(calls) > 1 or (not calls and not steps):
        fail(f"sample called p_sample_loop {times(len(calls))}; call it once, on x_T")
    start = calls[0]["img"] if calls else steps[0]["x"]
    if not torch.equal(start, x_T):
        fail("sample did not pass the x_T drawn by noise_like to p_sample_loop")
    if not calls and [s["t_index"] for s in steps] != list(range(config["T"] - 1, -1, -1)):
        fail("sample's own loop must call p_sample for t_index = T-1, ..., 0, each step on the last one's output; "
             "or call self.p_sample_loop(x_T)")
    checks.mapped(seen["got"], chain(x_T, config["T"]), shape, "x_0", "p_sample_loop(x_T)")


@pytest.mark.parametrize("case", reference_cases("sample"), ids=case_id)
def test_sample(diffusion_class, case):
    """sample end to end: x_T from noise_like, your loop and p_sample, mapped to [0, 1]."""
    check_reference(diffusion_class, case)


def test_sample_on_a_gpu(diffusion_class):
    check_on_gpu(diffusion_class, "sample")


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
    (the case's noise, in order), and for p_losses a q_sample spy that returns the right x_t."""
    config = case["config"]
    diffusion = build(diffusion_class, config["channels"], config["image_size"], config["timesteps"], case["model"])
    diffusion.noise_like = Sequence("noise_like", case["noise_like"], case["noise_like_calls"], DEVICE)
    if "q_sample_returns" in case:
        spy_q_sample(diffusion, [a.to(DEVICE) for a in case["args"]], case["q_sample_returns"].to(DEVICE))
    return diffusion


@PART.observes_cases
@observation
def observe_case(diffusion_class, function: str, case: dict) -> dict:
    """Run `function` on a reference case's inputs twice, on the same object, each time with fresh noise."""
    diffusion = build_for_case(diffusion_class, case)
    buffers = {name: b.clone() for name, b in diffusion.named_buffers()}

    def fresh_seams() -> dict:
        diffusion.noise_like = Sequence("noise_like", case["noise_like"], case["noise_like_calls"], DEVICE)
        return {"noise_like": diffusion.noise_like}

    def inspect(out, args, seen) -> None:
        if function == "p_losses" and "requires_grad" not in seen:
            seen["requires_grad"] = isinstance(out, torch.Tensor) and out.requires_grad

    seen = run_twice(function, diffusion, case, DEVICE, fresh_seams, inspect=inspect)
    seen["changed_buffers"] = [name for name, b in diffusion.named_buffers()
                               if name in buffers and not (b.shape == buffers[name].shape and torch.equal(b, buffers[name]))]
    return seen


@observation
def observe_forward(diffusion_class, config: dict, x_0: torch.Tensor, noise, repeats: int) -> dict:
    """forward(x_0, noise) `repeats` times on one object, with spies for p_losses and noise_like."""
    diffusion = build(diffusion_class, config["C"], config["size"], config["T"])
    diffusion.noise_like = noise_like = Recording(DEVICE)
    calls = spy_p_losses(diffusion, ("x_0", "t", "noise"), DEVICE)
    got = []
    for _ in range(repeats):
        arguments = (x_0.clone(),) if noise is None else (x_0.clone(), noise.clone())
        got.append(call("forward", diffusion.forward, *arguments))
    return {"got": got, "p_losses_calls": calls, "noise_like": noise_like.calls, "noise_like_returned": noise_like.returned}


@observation
def observe_loop(diffusion_class, config: dict, img: torch.Tensor) -> dict:
    diffusion = build(diffusion_class, config["C"], config["size"], config["T"])
    diffusion.noise_like = Recording(DEVICE)
    steps = spy_p_sample(diffusion, ("x", "t", "t_index"))
    got = call("p_sample_loop", diffusion.p_sample_loop, img.clone())
    return {"got": got, "steps": steps}


@observation
def observe_sample(diffusion_class, config: dict) -> dict:
    diffusion = build(diffusion_class, config["C"], config["size"], config["T"])
    diffusion.noise_like = noise_like = Recording(DEVICE)
    calls, steps = spy_p_sample_loop(diffusion, ("img",)), spy_p_sample(diffusion, ("x", "t", "t_index"))
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
        diffusion.noise_like = noise_like = Recording(DEVICE)
        x = torch.zeros(batch, channels, size, size, device=gpu)
        t = torch.full((batch,), timesteps - 1, dtype=torch.long, device=gpu)
        try:
            if function == "q_sample":
                out = call(function, diffusion.q_sample, x, t, x.clone())
            elif function == "p_losses":
                spy_q_sample(diffusion, None, x)
                out = call(function, diffusion.p_losses, x, t, x.clone())
            elif function == "forward":
                calls = spy_p_losses(diffusion, ("x_0", "t", "noise"), DEVICE)
                out = call(function, diffusion.forward, x)
                seen.update(inputs="x_0", fix="create it on x_0's device (t: torch.randint(0, T, (B,), device=x_0.device); "
                                              "the noise: self.noise_like(x_0.shape, x_0.device))")
                if calls and isinstance(calls[0]["t"], torch.Tensor):
                    seen["created"]["t"] = str(calls[0]["t"].device)
                if noise_like.calls:
                    seen["created"]["the noise"] = noise_like.calls[0][1]
            elif function == "p_sample":
                out = call(function, diffusion.p_sample, x, t, timesteps - 1)
            elif function == "p_sample_loop":
                steps = spy_p_sample(diffusion, ("x", "t", "t_index"))
                out = call(function, diffusion.p_sample_loop, x)
                seen.update(inputs="img", fix="create it with device=img.device (e.g. torch.full((B,), t_index, device=img.device))")
                wrong = [s for s in steps if isinstance(s["t"], torch.Tensor) and str(s["t"].device) != str(gpu)]
                seen["created"] = {"t": str(wrong[0]["t"].device)} if wrong else {}
            else:
                spy_p_sample_loop(diffusion, ("img",))
                out = call(function, diffusion.sample, batch)
                seen.update(inputs="the model", fix="draw it with self.noise_like(shape, self.device)")
                seen["created"] = {"x_T": noise_like.calls[0][1]} if noise_like.calls else {}
        except grading.Inconclusive:
            seen["inconclusive"] = True
            return seen
        if isinstance(out, torch.Tensor):
            seen["out"] = str(out.device)
    return seen
