"""Checks for the eight ConditionalGaussianDiffusion functions you write in diffusion.py (Part 2).

    pytest test_conditional.py                  # everything, a few seconds on a laptop CPU
    pytest test_conditional.py -k threshold     # the tests of one function (and those named after it)

How the checks work (as in test_diffusion.py, whose machinery, grading.py, they share)
- A tiny deterministic stand-in (`ConditionalStandIn` below, not the U-Net) plays model(x_t, t, y).
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

import inspect
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

import grading
from grading import GradingError, call, close, dtype_name, fail, observation, observe, times

FUNCTIONS = ("drop_labels", "p_losses", "forward", "guided_noise", "threshold", "p_sample", "p_sample_loop", "sample")
# End to end, these run your own versions of the functions they call, innermost first.
DEPENDS_ON = {"p_sample_loop": ("guided_noise", "threshold", "p_sample"),
              "sample": ("guided_noise", "threshold", "p_sample", "p_sample_loop")}
grading.register(__file__, FUNCTIONS)
ConditionalGaussianDiffusion = grading.import_student("diffusion", "ConditionalGaussianDiffusion")

DEFAULT_REFERENCE = Path(__file__).resolve().parent / "data" / "reference" / "public_conditional.pt"
REFERENCE = grading.load_reference(os.environ.get("CONDITIONAL_REFERENCE") or DEFAULT_REFERENCE)
DEVICE = torch.device(os.environ.get("DIFFUSION_TEST_DEVICE", "cpu"))

pytestmark = pytest.mark.timeout(max(60.0, 6 * grading.TIME_LIMIT_S))


def reference_cases(function: str) -> list[dict]:
    return REFERENCE["cases"].get(function, [])


def case_id(case: dict) -> str:
    return case["id"]


def config_id(config: dict) -> str:
    return f"B{config['B']}-C{config['C']}-{config['size']}x{config['size']}-T{config['T']}-K{config['K']}"


def shape(B, C, size, T, K=3, p=0.1, w=2.0, threshold="dynamic") -> dict:
    return dict(B=B, C=C, size=size, T=T, K=K, p=p, w=w, threshold=threshold)


FORWARD_SHAPES = [shape(5, 3, 4, 50, K=3, p=0.1), shape(3, 1, 8, 7, K=10, p=0.5)]
T_SHAPES = [shape(4096, 1, 2, 50), shape(600, 1, 2, 3)]
LOOP_SHAPES = [shape(2, 3, 8, 50, w=2.0, threshold="dynamic"), shape(3, 1, 4, 5, K=5, w=0.5, threshold="none")]
SAMPLE_SHAPES = [shape(3, 3, 8, 10, w=1.5, threshold="none"), shape(2, 1, 16, 10, K=7, w=3.0, threshold="dynamic")]
GPU_SHAPE = shape(2, 3, 4, 5)


@pytest.fixture
def diffusion_class():
    """The class under test: your ConditionalGaussianDiffusion."""
    return ConditionalGaussianDiffusion


# ----------------------------------------------------------------------------
# The tests, function by function (the machinery they use follows below)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", reference_cases("drop_labels"), ids=case_id)
def test_drop_labels(diffusion_class, case):
    """y'_b = K where u_b < p_uncond, else y_b, with u from uniform_like; y itself unchanged."""
    check_reference(diffusion_class, case)


@pytest.mark.parametrize("config", FORWARD_SHAPES, ids=config_id)
def test_drop_labels_draws_with_uniform_like(diffusion_class, config):
    """drop_labels asks uniform_like for one number per example, on y's device, and uses them."""
    y = labels(config, 7)
    seen = observe(observe_drop_labels, diffusion_class, config, y)
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


def test_drop_labels_on_a_gpu(diffusion_class):
    check_on_gpu(diffusion_class, "drop_labels")


@pytest.mark.parametrize("case", reference_cases("p_losses"), ids=case_id)
def test_p_losses(diffusion_class, case):
    """mean |noise - model(x_t, t, y)| with the stand-in; q_sample is a spy returning the right x_t."""
    check_reference(diffusion_class, case)


@pytest.mark.parametrize("config", FORWARD_SHAPES, ids=config_id)
def test_forward_drops_labels(diffusion_class, config):
    """forward passes p_losses x_0, the given noise and the labels that drop_labels(y) returned."""
    x_0, noise, y = images(config, 1), images(config, 2), labels(config, 3)
    seen = observe(observe_forward, diffusion_class, config, x_0, noise, y, 1)
    calls = check_forward_result(seen)
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
    seen = observe(observe_forward, diffusion_class, config, x_0, None, y, 1)
    calls = check_forward_result(seen)
    if not seen["noise_like"]:
        fail("forward(x_0, y) never called self.noise_like: draw the noise with self.noise_like(x_0.shape, x_0.device)")
    asked, device = seen["noise_like"][-1]
    if tuple(asked) != tuple(x_0.shape):
        fail(f"forward asked noise_like for shape {list(asked)}; the noise must have x_0's shape {list(x_0.shape)}")
    if device not in ("None", str(x_0.device)):
        fail(f"forward asked noise_like for noise on {device}; it belongs on x_0's device {x_0.device}")
    if not any(isinstance(calls[0]["noise"], torch.Tensor) and torch.equal(calls[0]["noise"], z)
               for z in seen["noise_like_returned"]):
        fail("forward did not pass the noise drawn by noise_like to p_losses")


@pytest.mark.parametrize("config", T_SHAPES, ids=config_id)
def test_forward_draws_t(diffusion_class, config):
    """t: a [B] long tensor on x_0's device, one uniform draw from 0..T-1 per example, new at every call."""
    timesteps, batch = config["T"], config["B"]
    x_0 = images(config, 6)
    seen = observe(observe_forward, diffusion_class, config, x_0, images(config, 7), labels(config, 8), 2)
    calls = check_forward_result(seen)
    t = calls[0]["t"]
    if not isinstance(t, torch.Tensor) or t.dtype != torch.long or tuple(t.shape) != (batch,) or t.device != x_0.device:
        described = f"{dtype_name(t)} {list(t.shape)} on {t.device}" if isinstance(t, torch.Tensor) else repr(t)
        fail(f"forward passed t = {described} to p_losses; t must be a [B] = [{batch}] long tensor on x_0's device, "
             "one step per example: torch.randint(0, T, (B,), device=x_0.device)")
    low, high = int(t.min()), int(t.max())
    if low == high:
        fail(f"forward gave every example the same t = {low}; draw one t per example (shape [B])")
    if low < 0 or high > timesteps - 1:
        fail(f"forward drew t in {low}..{high}, outside 0..T-1 = 0..{timesteps - 1}: use torch.randint(0, T, (B,))")
    counts = torch.bincount(t.cpu(), minlength=timesteps)
    expected = batch / timesteps  # a fair draw stays far inside [expected / 4, expected * 2.5] (odds below 1e-9)
    uneven = [k for k in range(timesteps) if not expected / 4 <= counts[k] <= expected * 2.5]
    if uneven:
        fail(f"forward's t is far from uniform on 0..{timesteps - 1}: value {uneven[0]} came up {int(counts[uneven[0]])} "
             f"times in {batch} draws (about {expected:.0f} expected); draw t ~ Uniform{{0, ..., T-1}}")
    again = calls[1]["t"]
    if isinstance(again, torch.Tensor) and again.shape == t.shape and torch.equal(again, t):
        fail("forward drew exactly the same t on two calls: it must draw new steps every time")


def test_forward_on_a_gpu(diffusion_class):
    check_on_gpu(diffusion_class, "forward")


@pytest.mark.parametrize("case", reference_cases("guided_noise"), ids=case_id)
def test_guided_noise(diffusion_class, case):
    """(1 + w) model(x_t, t, y) - w model(x_t, t, null) with the stand-in, at w = 0 and w > 0."""
    check_reference(diffusion_class, case)


def test_guided_noise_on_a_gpu(diffusion_class):
    check_on_gpu(diffusion_class, "guided_noise")


@pytest.mark.parametrize("case", reference_cases("threshold"), ids=case_id)
def test_threshold(diffusion_class, case):
    """none, static and dynamic thresholding of x0_hat, on batches mixing images in and out of [-1, 1]."""
    check_reference(diffusion_class, case)


@pytest.mark.parametrize("case", reference_cases("p_sample"), ids=case_id)
def test_p_sample(diffusion_class, case):
    """One reverse step with eps_bar from guided_noise and x0_hat through threshold (both spies)."""
    check_reference(diffusion_class, case)


@pytest.mark.parametrize("config", LOOP_SHAPES, ids=config_id)
def test_p_sample_loop_steps(diffusion_class, config):
    """p_sample_loop calls p_sample for t_index = T-1, ..., 0, chaining the steps, with the same y, w, threshold."""
    timesteps, batch = config["T"], config["B"]
    img, y = images(config, 9), labels(config, 10)
    seen = observe(observe_loop, diffusion_class, config, img, y)
    steps, got = seen["steps"], seen["got"]
    order = [s["t_index"] for s in steps]
    if order != list(range(timesteps - 1, -1, -1)):
        shown = order if len(order) <= 8 else order[:4] + ["..."] + order[-3:]
        fail(f"p_sample_loop called p_sample with t_index = {shown}; expected T-1, ..., 0 = {timesteps - 1}, ..., 0 "
             f"({timesteps} steps), as in Part 1")
    for k, step in enumerate(steps):
        t, t_index = step["t"], step["t_index"]
        if not isinstance(t, torch.Tensor) or t.dtype != torch.long or tuple(t.shape) != (batch,) or t.device != img.device \
                or not bool((t == t_index).all()):
            described = f"{t.tolist()[:4]} ({dtype_name(t)} on {t.device})" if isinstance(t, torch.Tensor) else repr(t)
            fail(f"p_sample_loop passed t = {described} at t_index {t_index}; t must be a [B] = [{batch}] long tensor "
                 "on the image's device, every entry equal to t_index")
        previous = img if k == 0 else steps[k - 1]["out"]
        if step["x"].shape != previous.shape or not torch.equal(step["x"], previous):
            fail(f"p_sample_loop: the step at t_index {t_index} did not start from "
                 f"{'img (x_T)' if k == 0 else 'the previous step'}; x = p_sample(x, t, t_index, y, w, threshold)")
        if not (isinstance(step["y"], torch.Tensor) and torch.equal(step["y"].cpu(), y.cpu())):
            fail(f"p_sample_loop passed other labels than y to p_sample at t_index {t_index}; pass y unchanged")
        if step["w"] != config["w"]:
            fail(f"p_sample got w = {step['w']!r} from p_sample_loop at t_index {t_index}; pass the loop's own w "
                 f"({config['w']}) to every step")
        if step["threshold"] != config["threshold"]:
            fail(f"p_sample got threshold = {step['threshold']!r} from p_sample_loop at t_index {t_index}; pass the "
                 f"loop's own threshold ({config['threshold']!r}) to every step")
    if not isinstance(got, torch.Tensor) or got.shape != steps[-1]["out"].shape \
            or not torch.allclose(got, steps[-1]["out"], rtol=0, atol=1e-6):
        fail("p_sample_loop must return the output of the last step (t_index 0), unchanged")


@pytest.mark.parametrize("case", reference_cases("p_sample_loop"), ids=case_id)
def test_p_sample_loop(diffusion_class, case):
    """The whole reverse process from a fixed x_T with fixed noise, through your p_sample, guided_noise, threshold."""
    check_reference(diffusion_class, case)


def test_p_sample_loop_on_a_gpu(diffusion_class):
    check_on_gpu(diffusion_class, "p_sample_loop")


@pytest.mark.parametrize("config", SAMPLE_SHAPES, ids=config_id)
def test_sample_calls(diffusion_class, config):
    """sample draws x_T = noise_like((len(y), C, H, W), device), runs p_sample_loop(x_T, y, w, threshold), maps to [0, 1]."""
    batch, channels, size = config["B"], config["C"], config["size"]
    y = labels(config, 11).tolist()
    seen = observe(observe_sample, diffusion_class, config, y)
    got, calls = seen["got"], seen["loop_calls"]
    wanted = (batch, channels, size, size)
    if not seen["noise_like"]:
        fail("sample never called self.noise_like: draw x_T with self.noise_like((len(y), C, H, W), self.device)")
    asked, device = seen["noise_like"][0]
    if tuple(asked) != wanted:
        fail(f"sample asked noise_like for shape {list(asked)}; x_T needs (B, C, H, W) = {list(wanted)}, "
             "one image per label (B = len(y))")
    if device not in ("None", seen["buffers_device"]):
        fail(f"sample asked noise_like for noise on {device}; sample on the buffers' device, self.device")
    steps, x_T = seen["steps"], seen["noise_like_returned"][0]
    if len(calls) > 1 or (not calls and not steps):
        fail(f"sample called p_sample_loop {times(len(calls))}; call it once, on x_T")
    # Through self.p_sample_loop, or its own loop over self.p_sample: each call gets y, w and threshold.
    for loop in calls or steps:
        if not (isinstance(loop["y"], torch.Tensor) and loop["y"].tolist() == y):
            fail(f"sample passed labels {loop['y']!r} to p_sample_loop; pass y (as check_labels returns it)")
        if loop["w"] != config["w"]:
            fail(f"p_sample_loop got w = {loop['w']!r} from sample; pass sample's own w ({config['w']})")
        if loop["threshold"] != config["threshold"]:
            fail(f"p_sample_loop got threshold = {loop['threshold']!r} from sample; pass sample's own threshold "
                 f"({config['threshold']!r})")
    start, out = (calls[0]["img"], calls[0]["out"]) if calls else (steps[0]["x"], steps[-1]["out"])
    if not torch.equal(start, x_T):
        fail("sample did not pass the x_T drawn by noise_like to p_sample_loop")
    if not calls and [s["t_index"] for s in steps] != list(range(config["T"] - 1, -1, -1)):
        fail("sample's own loop must call p_sample for t_index = T-1, ..., 0, each step on the last one's output; "
             "or call self.p_sample_loop(x_T, y, w, threshold)")
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != wanted:
        fail(f"sample returned {list(got.shape) if isinstance(got, torch.Tensor) else grading.type_name(got)}; "
             f"expected {list(wanted)}")
    if close(got, (chain(x_T, config["T"]) + 1) / 2):
        return
    if torch.allclose(got, out, rtol=0, atol=1e-6):
        fail("sample returned results in [-1, 1] instead of [0, 1]: map x_0 with (x_0 + 1) / 2")
    fail("sample must return (p_sample_loop(x_T, y, w, threshold) + 1) / 2")


@pytest.mark.parametrize("case", reference_cases("sample"), ids=case_id)
def test_sample(diffusion_class, case):
    """sample end to end: x_T from noise_like, your loop, p_sample, guided_noise and threshold, mapped to [0, 1]."""
    check_reference(diffusion_class, case)


def test_sample_on_a_gpu(diffusion_class):
    check_on_gpu(diffusion_class, "sample")


# ----------------------------------------------------------------------------
# Judging reference cases: fixed inputs, fixed noise, stored outputs
# ----------------------------------------------------------------------------


WHAT = {"drop_labels": "the labels", "p_losses": "the loss", "guided_noise": "eps_bar", "threshold": "x0_hat",
        "p_sample": "x_{t-1}", "p_sample_loop": "x_0", "sample": "the image batch"}
INPUT_KEYS = ("config", "model", "args", "noise_like", "noise_like_calls", "uniform_like", "q_sample_returns",
              "guided_noise_returns", "threshold_takes", "threshold_returns")
_CASES = grading.Memo()


def case_outputs(diffusion_class, case: dict) -> dict:
    key = (id(case["reference"]), case["function"], case["id"])
    return _CASES.get(diffusion_class, key, lambda: observe(
        observe_case, diffusion_class, case["function"], {k: case[k] for k in INPUT_KEYS if k in case}))


def check_reference(diffusion_class, case: dict) -> None:
    """Compare one stored case with your output; explain any difference."""
    function = case["function"]
    seen = case_outputs(diffusion_class, case)
    got, needed = seen["outputs"][0], case["noise_like_calls"]
    label = f"{function} [{case['label']}]"
    expected = case["expected"].to(DEVICE)
    problem = grading.difference(WHAT[function], got, expected)
    if problem is not None:
        lines = [f"{label}: {problem}"]
        if function == "p_sample" and not seen["spy_calls"]["guided_noise"]:
            lines.append("p_sample never called self.guided_noise: eps_bar comes from self.guided_noise(x, t, y, w) "
                         "(calling the model directly ignores w)")
        if function == "p_sample" and not seen["spy_calls"]["threshold"]:
            lines.append("p_sample never called self.threshold: x0_hat = self.threshold(x0_hat, threshold) applies the "
                         "method asked for (Part 1's clamp is only `static`)")
        known = known_mistakes(diffusion_class, function, got, case)
        lines += [line for _, line in known]
        blame = ()
        if all(culprit != function for culprit, _ in known):
            calls = seen["noise_calls"][0]
            if calls != needed:
                lines.append(f"noise_like was called {times(calls)}; this case needs {times(needed)}"
                             + (" (noise drawn elsewhere, e.g. torch.randn, bypasses the seam the grader uses)"
                                if calls < needed else ""))
            if isinstance(got, torch.Tensor) and not close(seen["outputs"][1], got):
                lines.append(f"{function} gives different results for the same inputs and the same noise_like and "
                             "uniform_like values: it draws randomness elsewhere (torch.randn, rand, randint)")
            blame = failing_dependencies(diffusion_class, function, case["reference"])
            lines += [f"Note: {d}, which {function} calls, fails its own tests: fix {d} first." for d in blame]
        fail(lines, blame)
    if seen["changed_arguments"]:
        fail(f"{label}: {function} changed the {seen['changed_arguments'][0]} it was given, in place"
             + (" (y[mask] = K changes the caller's tensor): return a new tensor (torch.where, masked_fill, or "
                "y.clone() first)" if function == "drop_labels" else ": work on a copy"))
    if function == "p_losses" and seen["requires_grad"] is False:
        fail(f"{label}: the loss has no gradient (computed under torch.no_grad(), or detached): compute it with "
             "gradients on")
    if not close(seen["outputs"][1], got):
        fail(f"{label}: called a second time on the same object with the same inputs, it returns something else: "
             "it keeps state between calls or changes the object")


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
            fail(f"{function}: {name} was created on {device} while {seen['inputs']} is on the GPU ({gpu}); create it "
                 f"with device={seen['inputs']}.device{how}")
    if seen["out"] not in (gpu, "not a tensor"):
        fail(f"{function} returned a tensor on {seen['out']} while its inputs are on the GPU ({gpu}){how}")


# ----------------------------------------------------------------------------
# Observations: run your code, record what it did
# ----------------------------------------------------------------------------


def build(diffusion_class, config: dict, model_state=None, device=DEVICE):
    model = ConditionalStandIn(config["C"], config["T"], config["K"])
    if model_state is not None:
        model.load_state_dict(model_state)
    diffusion = diffusion_class(model, image_size=config["size"], num_classes=config["K"], channels=config["C"],
                                timesteps=config["T"], p_uncond=config["p"])
    return diffusion.to(device) if device is not None else diffusion


def build_for_case(diffusion_class, case: dict):
    """The object a reference case runs on: the stand-in with the case's weights, fixed noise_like and
    uniform_like, and the spies that hand p_losses and p_sample the right intermediate values."""
    diffusion = build(diffusion_class, case["config"], case["model"])
    diffusion.noise_like = NoiseSequence(case["noise_like"], case["noise_like_calls"])
    diffusion.uniform_like = UniformSequence(case["uniform_like"])
    if "q_sample_returns" in case:
        spy_q_sample(diffusion, case["args"][:3], case["q_sample_returns"])
    return diffusion


@observation
def observe_case(diffusion_class, function: str, case: dict) -> dict:
    """Run `function` on a reference case's inputs twice on the same object, each time with fresh seams."""
    diffusion = build_for_case(diffusion_class, case)
    seen = {"outputs": [], "noise_calls": [], "requires_grad": None, "changed_arguments": [],
            "spy_calls": {"guided_noise": 0, "threshold": 0}}
    for _ in range(2):
        diffusion.noise_like = NoiseSequence(case["noise_like"], case["noise_like_calls"])
        diffusion.uniform_like = UniformSequence(case["uniform_like"])
        if function == "p_losses":
            diffusion.uniform_like = forbid("p_losses called uniform_like (through drop_labels?): forward drops the "
                                            "labels once; p_losses uses y as it is given")
        elif function != "drop_labels":
            diffusion.uniform_like = forbid(f"{function} called uniform_like (through drop_labels?): label "
                                            "dropout is for training only; sampling uses y and the null label as they are")
        if function == "p_sample":
            counts = spy_guidance_and_threshold(diffusion, case)
        args = [a.to(DEVICE, copy=True) if isinstance(a, torch.Tensor) else a for a in case["args"]]
        out = call(function, getattr(diffusion, function), *args)
        seen["outputs"].append(out)
        seen["noise_calls"].append(len(diffusion.noise_like.calls))
        if function == "p_sample":
            for name in counts:
                seen["spy_calls"][name] = max(seen["spy_calls"][name], counts[name])
        if function == "p_losses" and seen["requires_grad"] is None:
            seen["requires_grad"] = isinstance(out, torch.Tensor) and out.requires_grad
        for name, given, used in zip(ARGUMENT_NAMES[function], case["args"], args):
            if isinstance(given, torch.Tensor) and not torch.equal(used.cpu(), given) and name not in seen["changed_arguments"]:
                seen["changed_arguments"].append(name)
    return seen


ARGUMENT_NAMES = {"drop_labels": ("labels",), "p_losses": ("x_0", "t", "noise", "labels"),
                  "guided_noise": ("x_t", "t", "labels"), "threshold": ("x0_hat",),
                  "p_sample": ("x_t", "t", "t_index", "labels"), "p_sample_loop": ("x_T", "labels"), "sample": ()}


@observation
def observe_drop_labels(diffusion_class, config: dict, y: torch.Tensor) -> dict:
    diffusion = build(diffusion_class, config)
    diffusion.uniform_like = uniform = RecordingUniform()
    got = call("drop_labels", diffusion.drop_labels, y.clone())
    return {"got": got, "uniform_like": uniform.calls}


@observation
def observe_forward(diffusion_class, config: dict, x_0: torch.Tensor, noise, y: torch.Tensor, repeats: int) -> dict:
    """forward(x_0, y, noise) `repeats` times on one object, with spies for p_losses, drop_labels and noise_like."""
    diffusion = build(diffusion_class, config)
    diffusion.noise_like = noise_like = RecordingNoise()
    diffusion.uniform_like = RecordingUniform()
    calls = spy_p_losses(diffusion)
    drops = spy_drop_labels(diffusion, config["K"])
    got = []
    for _ in range(repeats):
        arguments = (x_0.clone(), y.clone()) if noise is None else (x_0.clone(), y.clone(), noise.clone())
        got.append(call("forward", diffusion.forward, *arguments))
    return {"got": got, "p_losses_calls": calls, "drop_calls": drops, "noise_like": noise_like.calls,
            "noise_like_returned": noise_like.returned}


def check_forward_result(seen: dict) -> list[dict]:
    calls = seen["p_losses_calls"]
    if len(calls) != len(seen["got"]):
        fail(f"forward called p_losses {times(len(calls))} in {times(len(seen['got']))} of its calls; it should call "
             "self.p_losses(x_0, t, noise, y) exactly once and return its loss")
    for got, call_seen in zip(seen["got"], calls):
        if not (isinstance(got, torch.Tensor) and got.shape == () and torch.equal(got, call_seen["loss"])):
            fail("forward must return the loss that p_losses returned (a scalar tensor), unchanged")
    return calls


@observation
def observe_loop(diffusion_class, config: dict, img: torch.Tensor, y: torch.Tensor) -> dict:
    diffusion = build(diffusion_class, config)
    diffusion.noise_like = RecordingNoise()
    steps = spy_p_sample(diffusion)
    got = call("p_sample_loop", diffusion.p_sample_loop, img.clone(), y.clone(), config["w"], config["threshold"])
    return {"got": got, "steps": steps}


@observation
def observe_sample(diffusion_class, config: dict, y: list) -> dict:
    diffusion = build(diffusion_class, config)
    diffusion.noise_like = noise_like = RecordingNoise()
    calls, steps = spy_p_sample_loop(diffusion), spy_p_sample(diffusion)
    got = call("sample", diffusion.sample, list(y), config["w"], config["threshold"])
    return {"got": got, "loop_calls": calls, "steps": steps, "noise_like": noise_like.calls,
            "noise_like_returned": noise_like.returned, "buffers_device": str(diffusion.alphas.device)}


@observation
def observe_on_gpu(diffusion_class, function: str, config: dict) -> dict:
    """Run `function` once on the stand-in GPU; the devices of what it created and returned."""
    batch, channels, size, timesteps = config["B"], config["C"], config["size"], config["T"]
    seen = {"inconclusive": False, "created": {}, "out": "not a tensor", "inputs": "x"}
    with grading.fake_gpu() as gpu:
        seen["gpu"] = str(gpu)
        diffusion = grading.to_device(build(diffusion_class, config, device=None), gpu)
        diffusion.noise_like = noise_like = RecordingNoise()
        diffusion.uniform_like = uniform = RecordingUniform()
        diffusion.check_labels = lambda y, device=None: y.to(device if device is not None else gpu)  # reads no values
        x = torch.zeros(batch, channels, size, size, device=gpu)
        t = torch.full((batch,), timesteps - 1, dtype=torch.long, device=gpu)
        y = torch.zeros(batch, dtype=torch.long, device=gpu)
        try:
            if function == "drop_labels":
                out = call(function, diffusion.drop_labels, y)
                seen["inputs"] = "y"
                if uniform.calls:
                    seen["created"]["the uniform numbers"] = grading.device_of(uniform.calls[0][1])
            elif function == "forward":
                calls = spy_p_losses(diffusion)
                out = call(function, diffusion.forward, x, y)
                seen["inputs"] = "x_0"
                if calls and isinstance(calls[0]["t"], torch.Tensor):
                    seen["created"]["t"] = str(calls[0]["t"].device)
                if noise_like.calls:
                    seen["created"]["the noise"] = grading.device_of(noise_like.calls[0][1])
            elif function == "guided_noise":
                out = call(function, diffusion.guided_noise, x, t, y, 2.0)
                seen["created"].update(diffusion.model.label_devices)
            elif function == "p_sample_loop":
                steps = spy_p_sample(diffusion)
                out = call(function, diffusion.p_sample_loop, x, y, 2.0, "static")
                seen["inputs"] = "img"
                wrong = [s for s in steps if isinstance(s["t"], torch.Tensor) and str(s["t"].device) != str(gpu)]
                seen["created"] = {"t": str(wrong[0]["t"].device)} if wrong else {}
            else:
                spy_p_sample_loop(diffusion)
                out = call(function, diffusion.sample, y, 2.0, "static")
                seen["inputs"] = "the model"
                seen["created"] = {"x_T": grading.device_of(noise_like.calls[0][1])} if noise_like.calls else {}
        except grading.Inconclusive:
            seen["inconclusive"] = True
            return seen
        if isinstance(out, torch.Tensor):
            seen["out"] = str(out.device)
    return seen


# ----------------------------------------------------------------------------
# The stand-in noise predictor, the fixed noise and uniform numbers, and the spies
# ----------------------------------------------------------------------------


class ConditionalStandIn(nn.Module):
    """A tiny deterministic class-conditional noise predictor used instead of the U-Net in these tests.

        h       = mix @ x_t  +  spatial * (x_t shifted right - x_t shifted down)
        eps_hat = tanh(h + shift[t] + label[y]) * gain[t]

    x_t: [B, C, H, W]; t: [B] long; y: [B] long in 0..K. `label` is [K + 1, C]: every label, the
    null label K included, has its own values, so a wrong label gives a visibly different
    prediction. Each example is computed on its own, so one call on 2B equals two calls on B.
    Elementwise arithmetic only, so CPU and CUDA agree to float32 rounding.
    """

    def __init__(self, channels: int, timesteps: int, num_classes: int):
        super().__init__()
        self.mix = nn.Parameter(torch.eye(channels))
        self.spatial = nn.Parameter(torch.zeros(channels))
        self.shift = nn.Parameter(torch.zeros(timesteps, channels))
        self.gain = nn.Parameter(torch.ones(timesteps, channels))
        self.label = nn.Parameter(torch.zeros(num_classes + 1, channels))
        self.label_devices: dict[str, str] = {}

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self._check_call(x_t, t, y)
        h = (self.mix[None, :, :, None, None] * x_t[:, None]).sum(2)
        h = h + self.spatial[None, :, None, None] * (x_t.roll(1, -1) - x_t.roll(1, -2))
        h = h + self.shift[t][:, :, None, None] + self.label[y][:, :, None, None]
        return torch.tanh(h) * self.gain[t][:, :, None, None]

    def _check_call(self, x_t, t, y) -> None:
        timesteps, channels = self.shift.shape
        null = self.label.shape[0] - 1
        if not isinstance(x_t, torch.Tensor) or x_t.dim() != 4 or x_t.shape[1] != channels:
            got = list(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__
            raise GradingError(f"the model was called with x_t = {got}; it takes a [B, {channels}, H, W] image batch")
        if x_t.dtype != self.mix.dtype:
            raise GradingError(f"the model was called with a {dtype_name(x_t)} x_t; keep x_t in float32")
        batch = x_t.shape[0]
        for name, value in (("t", t), ("y", y)):
            if value is None:
                raise GradingError("the model was called without the labels y: call self.model(x_t, t, y)")
            if not isinstance(value, torch.Tensor) or value.dtype != torch.long or value.shape != (batch,):
                got = f"{dtype_name(value)} {list(value.shape)}" if isinstance(value, torch.Tensor) else repr(value)
                raise GradingError(f"the model was called with {name} = {got}; it takes {name} as a [B] = [{batch}] "
                                   "long tensor, one per image (x_t, t and y must have the same batch size)")
            if grading.is_fake_mode():
                self.label_devices.setdefault(f"the labels passed to the model ({name})", str(value.device))
            elif value.device != x_t.device:
                raise GradingError(f"the model was called with {name} on {value.device} but x_t on {x_t.device}")
        if grading.is_fake_mode():
            return
        if int(t.min()) < 0 or int(t.max()) >= timesteps:
            raise GradingError(f"the model was called with t = {int(t.min())}..{int(t.max())}, outside 0..T-1 = "
                               f"0..{timesteps - 1}")
        if int(y.min()) < 0 or int(y.max()) > null:
            raise GradingError(f"the model was called with labels {int(y.min())}..{int(y.max())}, outside 0..K = "
                               f"0..{null}: classes are 0..K-1 and the null label is K = self.null_label")


class NoiseSequence:
    """Stands in for `noise_like`: hands out the reference's noise tensors, in order (then spares)."""

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
            raise GradingError(f"noise_like call {k} asked for shape {list(shape)}; the noise needed here has shape "
                               f"{list(z.shape)}")
        return z.to(device if device is not None else DEVICE, copy=True)


class UniformSequence:
    """Stands in for `uniform_like`: hands out the reference's uniform numbers (one [B] tensor per call)."""

    def __init__(self, tensors: list[torch.Tensor]):
        self.tensors = [u.to(DEVICE) for u in tensors]
        self.calls = 0

    def __call__(self, shape, device=None) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        self.calls += 1
        if self.calls > len(self.tensors):
            raise GradingError(f"uniform_like was called {times(self.calls)}; the dropout needs it once")
        u = self.tensors[self.calls - 1]
        if shape != tuple(u.shape):
            raise GradingError(f"asked uniform_like for shape {list(shape)}; the dropout needs one number per "
                               f"example, shape [B] = {list(u.shape)} (uniform_like(y.shape, y.device))")
        return u.to(device if device is not None else DEVICE, copy=True)


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


class RecordingUniform(RecordingNoise):
    """A `uniform_like` that records its calls and returns fixed pseudo-random numbers in [0, 1)."""

    def __call__(self, shape, device=None) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        self.calls.append((shape, grading.device_of(device)))
        if grading.is_fake_mode():
            return torch.zeros(shape, device=device if device is not None else DEVICE)
        u = torch.rand(shape, generator=self.generator).to(device if device is not None else DEVICE)
        self.returned.append(u)
        return u


def forbid(message: str):
    def seam(*args, **kwargs):
        raise GradingError(message)
    return seam


def bind(function: str, names: tuple[str, ...], args, kwargs, defaults: dict | None = None) -> dict:
    defaults = defaults or {}
    signature = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                     default=defaults.get(n, inspect.Parameter.empty)) for n in names])
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as error:
        raise GradingError(f"{function} was called with the wrong arguments ({error}); call it as "
                           f"{function}({', '.join(names)})") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def images(config: dict, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    size = (config["B"], config["C"], config["size"], config["size"])
    return (torch.rand(size, generator=generator) * 2 - 1).to(DEVICE)


def labels(config: dict, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config["K"], (config["B"],), generator=generator).to(DEVICE)


def spy_q_sample(diffusion, args: list, x_t: torch.Tensor) -> None:
    """p_losses is checked on its own: q_sample returns the right x_t and checks it gets p_losses' arguments."""
    x_t = x_t.to(DEVICE)

    def q_sample(*a, **k):
        bound = bind("q_sample", ("x_0", "t", "noise"), a, k)
        for name, given in zip(("x_0", "t", "noise"), args):
            got = bound[name]
            if not (isinstance(got, torch.Tensor) and got.shape == given.shape and torch.equal(got.cpu(), given.cpu())):
                raise GradingError(f"called q_sample with another {name} than the one it was given; "
                                   "make x_t with self.q_sample(x_0, t, noise)")
        return x_t.clone()

    diffusion.q_sample = q_sample


def spy_guidance_and_threshold(diffusion, case: dict) -> dict:
    """p_sample is checked on its own: guided_noise returns the right eps_bar, threshold the right thresholded
    x0_hat, and each checks that it is called with the right arguments."""
    x, t, _, y, w, method = case["args"]
    counts = {"guided_noise": 0, "threshold": 0}

    def guided_noise(*a, **k):
        counts["guided_noise"] += 1
        bound = bind("guided_noise", ("x", "t", "y", "w"), a, k)
        for name, given in (("x", x), ("t", t), ("y", y)):
            got = bound[name]
            if not (isinstance(got, torch.Tensor) and got.shape == given.shape and torch.equal(got.cpu(), given)):
                raise GradingError(f"called guided_noise with another {name} than p_sample's own; "
                                   "eps_bar comes from self.guided_noise(x, t, y, w)")
        if bound["w"] != w:
            raise GradingError(f"guided_noise got w = {bound['w']!r}; pass p_sample's own w ({w})")
        return case["guided_noise_returns"].to(DEVICE, copy=True)

    def threshold(*a, **k):
        counts["threshold"] += 1
        bound = bind("threshold", ("x0_hat", "method"), a, k)
        got, wanted = bound["x0_hat"], case["threshold_takes"]
        if bound["method"] != method:
            raise GradingError(f"called threshold with method {bound['method']!r}; pass p_sample's own threshold "
                               f"({method!r})")
        if not close(got, wanted):  # x0_hat reaches 1e3 at t = T-1
            if not counts["guided_noise"]:
                raise GradingError("p_sample never called self.guided_noise: eps_bar comes from self.guided_noise(x, t, y, w) "
                                   "(calling the model directly ignores w)")
            if isinstance(got, torch.Tensor) and got.shape == x.shape and close(got, x):
                raise GradingError("threshold was given x_t; threshold the predicted x0_hat = (x_t - sqrt(1 - abar_t) "
                                   "eps_bar) / sqrt(abar_t): x_t is noisy and is meant to reach beyond [-1, 1]")
            raise GradingError("threshold was given something other than x0_hat = (x_t - sqrt(1 - abar_t) eps_bar) / "
                               "sqrt(abar_t), with eps_bar from guided_noise: threshold x0_hat before the posterior "
                               "mean (not x_t, not x_{t-1})")
        return case["threshold_returns"].to(DEVICE, copy=True)

    diffusion.guided_noise = guided_noise
    diffusion.threshold = threshold
    return counts


def spy_p_losses(diffusion) -> list[dict]:
    calls = []

    def p_losses(*args, **kwargs):
        bound = bind("p_losses", ("x_0", "t", "noise", "y"), args, kwargs)
        loss = torch.tensor(0.123 + len(calls) + 1, device=DEVICE if not grading.is_fake_mode() else grading.FAKE_GPU)
        calls.append(dict(bound, loss=loss))
        return loss

    diffusion.p_losses = p_losses
    return calls


def spy_drop_labels(diffusion, num_classes: int) -> list[dict]:
    """drop_labels returns a known relabelling ((y + 1) mod (K + 1)), so forward's use of it shows."""
    calls = []

    def drop_labels(*args, **kwargs):
        y = bind("drop_labels", ("y",), args, kwargs)["y"]
        if not isinstance(y, torch.Tensor):
            raise GradingError(f"passed {type(y).__name__} to drop_labels; pass the labels, a [B] long tensor")
        out = (y + 1) % (num_classes + 1)
        calls.append({"y": y.clone(), "out": out})
        return out

    diffusion.drop_labels = drop_labels
    return calls


def step_stand_in(x: torch.Tensor, t_index) -> torch.Tensor:
    """What the p_sample spy returns: a fixed map per step into (-1, 1), so order and chaining show."""
    return torch.tanh(x) * 0.9 + 0.1 * math.sin(int(t_index) + 1)


def chain(img: torch.Tensor, timesteps: int) -> torch.Tensor:
    """What the p_sample_loop spy returns: the p_sample spy for t_index = T-1, ..., 0 (so that a sample
    running its own loop over self.p_sample gets the same x_0 as one calling self.p_sample_loop)."""
    for t_index in range(timesteps - 1, -1, -1):
        img = step_stand_in(img, t_index)
    return img


def spy_p_sample(diffusion) -> list[dict]:
    """Replace p_sample with step_stand_in; record copies of its arguments and outputs."""
    steps = []

    def p_sample(*args, **kwargs):
        bound = bind("p_sample", ("x", "t", "t_index", "y", "w", "threshold"), args, kwargs,
                     {"w": 0.0, "threshold": "static"})
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
        bound = bind("p_sample_loop", ("img", "y", "w", "threshold"), args, kwargs, {"w": 0.0, "threshold": "static"})
        img = bound["img"]
        if not isinstance(img, torch.Tensor):
            raise GradingError(f"passed {type(img).__name__} to p_sample_loop; pass x_T, a tensor")
        out = chain(img, diffusion.num_timesteps)
        calls.append(grading.snapshot(dict(bound, out=out)))
        return out

    diffusion.p_sample_loop = p_sample_loop
    return calls
