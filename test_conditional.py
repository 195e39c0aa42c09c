"""Checks for the eight ConditionalGaussianDiffusion functions you write in diffusion.py (Part 2).

    pytest test_conditional.py                  # everything, a few seconds on a laptop CPU
    pytest test_conditional.py -k threshold     # the tests of one function (and those named after it)

How the checks work (as in test_diffusion.py, whose machinery, the grading/ package, they share)
- A tiny deterministic stand-in (grading.stand_ins.StandInModel, not the U-Net) plays model(x_t, t, y).
- `noise_like` and `uniform_like` are replaced by fixed sequences of tensors. Every input, every
  noise and uniform tensor, the stand-in's weights and every expected output are stored in
  data/reference/public_conditional.pt.
- Each function is judged on its own where it can be: p_losses gets the right x_t from a q_sample
  spy; p_sample gets eps_bar from a guided_noise spy and the thresholded x0_hat from a threshold spy
  (which also checks that you handed it the right x0_hat). p_sample_loop and sample run your own
  functions end to end; when one of those fails its own tests, the failure is charged to it.
- Where the randomness is yours (the t that `forward` draws), the tests spy on the calls instead.

Reading a failure: as in test_diffusion.py. When your output equals the output of a common mistake
stored in the reference file, the message names the mistake and the equation it breaks.
"<name>: not implemented yet" means the function still raises NotImplementedError.

Environment variables
    CONDITIONAL_REFERENCE   another reference file (the autograder's hidden set uses this)
    DIFFUSION_TEST_DEVICE   run on another device, e.g. cuda (default: cpu)
    DIFFUSION_TEST_TIMEOUT  seconds one call of your function may take (default: 10)
"""

from __future__ import annotations

import pytest
import torch

import grading
from grading import checks, fail, observe, times
from grading import runs_conditional as run
from grading.cases import Part

FUNCTIONS = ("drop_labels", "p_losses", "forward", "guided_noise", "threshold", "p_sample", "p_sample_loop", "sample")
DEVICE = run.DEVICE
PART = Part(
    __file__, FUNCTIONS, student=("diffusion", "ConditionalGaussianDiffusion"),
    reference_file=("CONDITIONAL_REFERENCE", "public_conditional.pt"), device=DEVICE, seams=("noise_like", "uniform_like"),
    what={"drop_labels": "the labels", "p_losses": "the loss", "guided_noise": "eps_bar", "threshold": "x0_hat",
          "p_sample": "x_{t-1}", "p_sample_loop": "x_0", "sample": "the image batch"},
    inputs=("config", "model", "args", "noise_like", "noise_like_calls", "uniform_like", "q_sample_returns",
            "guided_noise_returns", "threshold_takes", "threshold_returns"),
    observe_case=run.observe_case, observe_on_gpu=run.observe_on_gpu,
    gpu_config=dict(B=2, C=3, size=4, T=5, K=3, p=0.1, w=2.0, threshold="dynamic"),
    # End to end, these run your own versions of the functions they call, innermost first.
    depends_on={"p_sample_loop": ("guided_noise", "threshold", "p_sample"),
                "sample": ("guided_noise", "threshold", "p_sample", "p_sample_loop")},
    in_place_hints={"drop_labels": " (y[mask] = K changes the caller's tensor): return a new tensor (torch.where, "
                                   "masked_fill, or y.clone() first)"})
ConditionalGaussianDiffusion, diffusion_class = PART.student_class, PART.fixture()
DEPENDS_ON, REFERENCE, reference_cases, check_reference = PART.depends_on, PART.reference, PART.cases, PART.check
pytestmark = pytest.mark.timeout(max(60.0, 6 * grading.TIME_LIMIT_S))


def config_id(config: dict) -> str:
    return f"B{config['B']}-C{config['C']}-{config['size']}x{config['size']}-T{config['T']}-K{config['K']}"


def shape(B, C, size, T, K=3, p=0.1, w=2.0, threshold="dynamic") -> dict:
    return dict(B=B, C=C, size=size, T=T, K=K, p=p, w=w, threshold=threshold)


FORWARD_SHAPES = [shape(5, 3, 4, 50, K=3, p=0.1), shape(3, 1, 8, 7, K=10, p=0.5)]
T_SHAPES = [shape(4096, 1, 2, 50), shape(600, 1, 2, 3)]
LOOP_SHAPES = [shape(2, 3, 8, 50, w=2.0, threshold="dynamic"), shape(3, 1, 4, 5, K=5, w=0.5, threshold="none")]
SAMPLE_SHAPES = [shape(3, 3, 8, 10, w=1.5, threshold="none"), shape(2, 1, 16, 10, K=7, w=3.0, threshold="dynamic")]


def labels(config: dict, seed: int) -> torch.Tensor:
    """[B] labels in 0..K-1; images(config, seed) below: a [B, C, size, size] batch in [-1, 1)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config["K"], (config["B"],), generator=generator).to(DEVICE)


def images(config: dict, seed: int) -> torch.Tensor:
    return grading.stand_ins.images(config, seed, DEVICE)


# ----------------------------------------------------------------------------
# The tests, function by function (grading/runs_*.py runs your code for them)
# ----------------------------------------------------------------------------


# For each function: test_<function>[case] compares your output on stored inputs and noise with the
# stored output (grading.cases.Part.check explains a difference); test_<function>_on_a_gpu runs it on a
# stand-in GPU; the tests written out check what stored cases cannot.


globals().update(PART.tests_of(
    "drop_labels", "y'_b = K where u_b < p_uncond, else y_b, u from uniform_like; y itself unchanged.", gpu=True))


@pytest.mark.parametrize("config", FORWARD_SHAPES, ids=config_id)
def test_drop_labels_draws_with_uniform_like(diffusion_class, config):
    """drop_labels asks uniform_like for one number per example, on y's device, and uses them."""
    y = labels(config, 7)
    seen = observe(run.observe_drop_labels, diffusion_class, config, y)
    if not seen["uniform_like"]:
        fail("drop_labels never called self.uniform_like: draw the numbers with self.uniform_like(y.shape, y.device), "
             "not torch.rand (uniform_like is the seam the grader and the trainer use)")
    asked, device = seen["uniform_like"][0]
    if tuple(asked) != tuple(y.shape):
        fail(f"drop_labels asked uniform_like for shape {list(asked)}; it needs one number per example, shape "
             f"[B] = {list(y.shape)}, so that each label is dropped independently")
    if device not in ("None", str(y.device)):
        fail(f"drop_labels asked uniform_like for numbers on {device}; they belong on y's device {y.device}")
    if len(seen["uniform_like"]) != 1:
        fail(f"drop_labels called uniform_like {times(len(seen['uniform_like']))}; once is enough")


globals().update(PART.tests_of(
    "p_losses", "mean |noise - model(x_t, t, y)| with the stand-in; q_sample is a spy returning the right x_t."))


globals().update(PART.tests_of("forward", gpu=True))


@pytest.mark.parametrize("config", FORWARD_SHAPES, ids=config_id)
def test_forward_drops_labels(diffusion_class, config):
    """forward passes p_losses x_0, the given noise and the labels that drop_labels(y) returned."""
    x_0, noise, y = images(config, 1), images(config, 2), labels(config, 3)
    seen = observe(run.observe_forward, diffusion_class, config, x_0, noise, y, 1)
    calls = checks.forward_result(seen, "self.p_losses(x_0, t, noise, y)")
    drops = seen["drop_calls"]
    if not drops:
        fail("forward passed the labels to p_losses without dropping them: pass self.drop_labels(y) (label dropout "
             "teaches the network the unconditional prediction that guidance needs)")
    if len(drops) != 1:
        fail(f"forward called drop_labels {times(len(drops))}; once per call")
    if not (isinstance(drops[0]["y"], torch.Tensor) and torch.equal(drops[0]["y"].cpu(), y.cpu())):
        fail("forward called drop_labels with other labels than the y it was given")
    given = calls[0]["y"]
    if not (isinstance(given, torch.Tensor) and torch.equal(given, drops[0]["out"])):
        if isinstance(given, torch.Tensor) and torch.equal(given.cpu(), y.cpu()):
            fail("forward passed the labels to p_losses without dropping them: pass the labels that "
                 "self.drop_labels(y) returns")
        fail("forward must pass p_losses the labels that self.drop_labels(y) returned")
    if not torch.equal(calls[0]["x_0"], x_0):
        fail("forward: the x_0 passed to p_losses is not the x_0 that forward was given")
    if not isinstance(calls[0]["noise"], torch.Tensor) or not torch.equal(calls[0]["noise"], noise):
        fail("forward ignored the noise it was given: when `noise` is not None, pass it to p_losses unchanged")


@pytest.mark.parametrize("config", FORWARD_SHAPES, ids=config_id)
def test_forward_draws_noise_with_noise_like(diffusion_class, config):
    """forward(x_0, y) draws its noise with self.noise_like(x_0.shape, x_0.device) and uses it."""
    x_0, y = images(config, 4), labels(config, 5)
    seen = observe(run.observe_forward, diffusion_class, config, x_0, None, y, 1)
    calls = checks.forward_result(seen, "self.p_losses(x_0, t, noise, y)")
    checks.noise_drawn_for(seen, x_0, calls[0]["noise"], "forward(x_0, y)")


@pytest.mark.parametrize("config", T_SHAPES, ids=config_id)
def test_forward_draws_t(diffusion_class, config):
    """t: a [B] long tensor on x_0's device, one uniform draw from 0..T-1 per example, new at every call."""
    x_0 = images(config, 6)
    seen = observe(run.observe_forward, diffusion_class, config, x_0, images(config, 7), labels(config, 8), 2)
    calls = checks.forward_result(seen, "self.p_losses(x_0, t, noise, y)")
    checks.time_steps(calls[0]["t"], calls[1]["t"], x_0, config["T"])


globals().update(PART.tests_of(
    "guided_noise", "(1 + w) model(x_t, t, y) - w model(x_t, t, null), at w = 0 and w > 0.", gpu=True))


globals().update(PART.tests_of(
    "threshold", "none, static and dynamic thresholding of x0_hat, on batches mixing images in and out of [-1, 1]."))


globals().update(PART.tests_of(
    "p_sample", "One reverse step with eps_bar from guided_noise and x0_hat through threshold (both spies)."))


globals().update(PART.tests_of(
    "p_sample_loop", "The reverse process from a fixed x_T, through your p_sample, guided_noise, threshold.",
    gpu=True))


@pytest.mark.parametrize("config", LOOP_SHAPES, ids=config_id)
def test_p_sample_loop_steps(diffusion_class, config):
    """p_sample_loop calls p_sample for t_index = T-1, ..., 0, chaining the steps, with the same y, w, threshold."""
    img, y = images(config, 9), labels(config, 10)
    seen = observe(run.observe_loop, diffusion_class, config, img, y)
    checks.reverse_steps(seen["steps"], img, seen["got"], config["T"], "p_sample(x, t, t_index, y, w, threshold)")
    for step in seen["steps"]:
        passed_on(step, y.tolist(), config, "p_sample_loop", f"p_sample at t_index {step['t_index']}")


def passed_on(call_seen: dict, y: list, config: dict, caller: str, callee: str) -> None:
    """`caller` passed its own y, w and threshold to `callee`."""
    if not (isinstance(call_seen["y"], torch.Tensor) and call_seen["y"].tolist() == y):
        fail(f"{caller} passed other labels than y to {callee}; pass y unchanged")
    if call_seen["w"] != config["w"]:
        fail(f"{callee.split()[0]} got w = {call_seen['w']!r} from {caller}; pass {caller}'s own w ({config['w']}) on "
             "unchanged")
    if call_seen["threshold"] != config["threshold"]:
        fail(f"{callee.split()[0]} got threshold = {call_seen['threshold']!r} from {caller}; pass {caller}'s own "
             f"threshold ({config['threshold']!r}) on unchanged")


globals().update(PART.tests_of(
    "sample", "End to end: x_T from noise_like, your loop, p_sample, guided_noise, threshold, mapped to [0, 1].",
    gpu=True))


@pytest.mark.parametrize("config", SAMPLE_SHAPES, ids=config_id)
def test_sample_calls(diffusion_class, config):
    """sample draws x_T = noise_like((len(y), C, H, W), device), runs p_sample_loop(x_T, y, w, threshold), maps to [0, 1]."""
    y = labels(config, 11).tolist()
    seen = observe(run.observe_sample, diffusion_class, config, y)
    checks.sample_calls(seen, (len(y), config["C"], config["size"], config["size"]), config["T"],
                        "p_sample_loop(x_T, y, w, threshold)", lambda call_seen, callee: passed_on(call_seen, y, config, "sample", callee))
