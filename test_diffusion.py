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
- Each test first runs your code in an `observe_*` function (grading/runs_diffusion.py), which returns
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
    from grading.runs_diffusion import build_for_case
    case = td.reference_case("q_sample", "t_mixed-B6-C3-8x8-T50")
    diffusion = build_for_case(td.GaussianDiffusion, case)   # stand-in model, fixed noise_like
    x_t = diffusion.q_sample(*case["args"])
    print((x_t - case["expected"]).abs().max())

Environment variables
    DIFFUSION_REFERENCE     another reference file (the autograder's hidden set uses this)
    DIFFUSION_TEST_DEVICE   run on another device, e.g. cuda (default: cpu)
    DIFFUSION_TEST_TIMEOUT  seconds one call of your function may take (default: 10)
"""

from __future__ import annotations

import pytest
import torch

import grading
from grading import checks, fail, observe
from grading import runs_diffusion as run
from grading.cases import Part

FUNCTIONS = ("q_sample", "p_losses", "forward", "p_sample", "p_sample_loop", "sample")
DEVICE = run.DEVICE
PART = Part(
    __file__, FUNCTIONS, student=("diffusion", "GaussianDiffusion"), reference_file=("DIFFUSION_REFERENCE", "public.pt"),
    what={"q_sample": "x_t", "p_losses": "the loss", "p_sample": "x_{t-1}", "p_sample_loop": "x_0", "sample": "the image batch"},
    inputs=("config", "model", "args", "noise_like", "noise_like_calls", "q_sample_returns"),
    observe_case=run.observe_case, device=DEVICE, observe_on_gpu=run.observe_on_gpu, gpu_config=dict(B=2, C=3, size=4, T=5),
    # End to end, these run your own versions of the functions they call, innermost first. (p_losses
    # does not: its tests hand it the right x_t, so each function is judged on its own.)
    depends_on={"p_sample_loop": ("p_sample",), "sample": ("p_sample", "p_sample_loop")},
    error_hints=[(r"The size of tensor a \(\d+\) must match the size of tensor b \(\d+\)",
                  "A schedule value indexed with t has shape [B] and does not broadcast against [B, C, H, W] images: "
                  "read it with extract(a, t, x.shape), which reshapes it to [B, 1, 1, 1].")])
GaussianDiffusion, diffusion_class = PART.student_class, PART.fixture()
DEPENDS_ON, REFERENCE, reference_cases, reference_case = PART.depends_on, PART.reference, PART.cases, PART.case
check_reference, case_outputs = PART.check, PART.outputs

# An infinite loop fails its call after DIFFUSION_TEST_TIMEOUT s; this stops a test that makes many calls.
pytestmark = pytest.mark.timeout(max(60.0, 6 * grading.TIME_LIMIT_S))


def config_id(config: dict) -> str:
    return f"B{config['B']}-C{config['C']}-{config['size']}x{config['size']}-T{config['T']}"


# Settings of the spy tests: batch B, channels C, image size, T (a T other than 50 catches a hard-coded 50).
FORWARD_SHAPES = [dict(B=5, C=3, size=4, T=50), dict(B=3, C=1, size=8, T=7)]
T_SHAPES = [dict(B=4096, C=1, size=2, T=50), dict(B=600, C=1, size=2, T=3)]
LOOP_SHAPES = [dict(B=2, C=3, size=8, T=50), dict(B=3, C=1, size=4, T=5)]
SAMPLE_SHAPES = [dict(B=3, C=3, size=8, T=10), dict(B=2, C=1, size=16, T=10)]


def images(config: dict, seed: int) -> torch.Tensor:
    return grading.stand_ins.images(config, seed, DEVICE)


# ----------------------------------------------------------------------------
# The tests, function by function (grading/runs_*.py runs your code for them)
# ----------------------------------------------------------------------------


# For each function: test_<function>[case] compares your output on stored inputs and noise with the
# stored output (grading.cases.Part.check explains a difference); test_<function>_on_a_gpu runs it on a
# stand-in GPU; the tests written out check what stored cases cannot.


globals().update(PART.tests_of(
    "q_sample", "x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise, t per example (0, 1, T-1, mixed).", gpu=True))


globals().update(PART.tests_of(
    "p_losses", "mean |noise - model(x_t, t)|, with a gradient; a q_sample spy hands it the right x_t.", gpu=True))


globals().update(PART.tests_of("forward", gpu=True))


@pytest.mark.parametrize("config", FORWARD_SHAPES, ids=config_id)
def test_forward_uses_given_noise(diffusion_class, config):
    """forward(x_0, noise) passes x_0 and that very noise to p_losses and returns its loss."""
    x_0, noise = images(config, 1), images(config, 2)
    seen = observe(run.observe_forward, diffusion_class, config, x_0, noise, 1)
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
    seen = observe(run.observe_forward, diffusion_class, config, x_0, None, 1)
    call_seen = checks.forward_result(seen, "self.p_losses(x_0, t, noise)")[0]
    checks.noise_drawn_for(seen, x_0, call_seen["noise"], "forward(x_0)")


@pytest.mark.parametrize("config", T_SHAPES, ids=config_id)
def test_forward_draws_t(diffusion_class, config):
    """t: a [B] long tensor on x_0's device, one uniform draw from 0..T-1 per example, new at every call."""
    x_0 = images(config, 4)
    seen = observe(run.observe_forward, diffusion_class, config, x_0, images(config, 5), 2)
    calls = checks.forward_result(seen, "self.p_losses(x_0, t, noise)")
    checks.time_steps(calls[0]["t"], calls[1]["t"], x_0, config["T"])


globals().update(PART.tests_of(
    "p_sample", "One step of Algorithm 2 at t_index 0, 1, T-1 and in between; noise from noise_like.", gpu=True))


@pytest.mark.parametrize("config", LOOP_SHAPES, ids=config_id)
def test_p_sample_loop_steps(diffusion_class, config):
    """p_sample_loop calls p_sample for t_index = T-1, ..., 0, feeding each output to the next step."""
    img = images(config, 6)
    checks.reverse_steps(**observe(run.observe_loop, diffusion_class, config, img), img=img, timesteps=config["T"],
                         call="p_sample(x, t, t_index)")


globals().update(PART.tests_of(
    "p_sample_loop", "The whole reverse process from a fixed x_T with fixed noise, through your p_sample.", gpu=True))


globals().update(PART.tests_of(
    "sample", "sample end to end: x_T from noise_like, your loop and p_sample, mapped to [0, 1].", gpu=True))


@pytest.mark.parametrize("config", SAMPLE_SHAPES, ids=config_id)
def test_sample_calls(diffusion_class, config):
    """sample draws x_T = noise_like((B, C, H, W), device), runs p_sample_loop on it (or its own loop over
    p_sample), maps to [0, 1]."""
    shape = (config["B"], config["C"], config["size"], config["size"])
    checks.sample_calls(observe(run.observe_sample, diffusion_class, config), shape, config["T"], "p_sample_loop(x_T)")
