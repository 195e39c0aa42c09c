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

import os
from pathlib import Path

import pytest
import torch

import grading
from grading import GradingError, call, checks, close, fail, observation, observe, times
from grading.cases import Part, case_id, run_twice
from grading.seams import Recording, Sequence, bind, forbid, spy
from grading.stand_ins import StandInModel, chain, spy_p_losses, spy_p_sample, spy_p_sample_loop, spy_q_sample

FUNCTIONS = ("drop_labels", "p_losses", "forward", "guided_noise", "threshold", "p_sample", "p_sample_loop", "sample")
grading.register(__file__, FUNCTIONS)
ConditionalGaussianDiffusion = grading.import_student("diffusion", "ConditionalGaussianDiffusion")
DEVICE = torch.device(os.environ.get("DIFFUSION_TEST_DEVICE", "cpu"))
PART = Part(
    functions=FUNCTIONS, device=DEVICE, seams=("noise_like", "uniform_like"),
    reference_file=(os.environ.get("CONDITIONAL_REFERENCE")
                    or Path(__file__).resolve().parent / "data" / "reference" / "public_conditional.pt"),
    what={"drop_labels": "the labels", "p_losses": "the loss", "guided_noise": "eps_bar", "threshold": "x0_hat",
          "p_sample": "x_{t-1}", "p_sample_loop": "x_0", "sample": "the image batch"},
    inputs=("config", "model", "args", "noise_like", "noise_like_calls", "uniform_like", "q_sample_returns",
            "guided_noise_returns", "threshold_takes", "threshold_returns"),
    # End to end, these run your own versions of the functions they call, innermost first.
    depends_on={"p_sample_loop": ("guided_noise", "threshold", "p_sample"),
                "sample": ("guided_noise", "threshold", "p_sample", "p_sample_loop")},
    hints={"drop_labels": " (y[mask] = K changes the caller's tensor): return a new tensor (torch.where, masked_fill, "
                          "or y.clone() first)"})
DEPENDS_ON, REFERENCE, reference_cases = PART.depends_on, PART.reference, PART.cases
SAMPLE_ARGUMENTS = ("y", "w", "threshold")
DEFAULTS = {"w": 0.0, "threshold": "static"}

pytestmark = pytest.mark.timeout(max(60.0, 6 * grading.TIME_LIMIT_S))


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


def check_reference(diffusion_class, case: dict) -> None:
    PART.check(diffusion_class, case)


def check_on_gpu(diffusion_class, function: str) -> None:
    """Run `function` with the model, its buffers and its inputs on a stand-in GPU."""
    checks.on_gpu(function, observe(observe_on_gpu, diffusion_class, function, GPU_SHAPE))


def images(config: dict, seed: int) -> torch.Tensor:
    return grading.stand_ins.images(config, seed, DEVICE)


def labels(config: dict, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config["K"], (config["B"],), generator=generator).to(DEVICE)


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
    seen = observe(observe_forward, diffusion_class, config, x_0, None, y, 1)
    calls = checks.forward_result(seen, "self.p_losses(x_0, t, noise, y)")
    checks.noise_drawn_for(seen, x_0, calls[0]["noise"], "forward(x_0, y)")


@pytest.mark.parametrize("config", T_SHAPES, ids=config_id)
def test_forward_draws_t(diffusion_class, config):
    """t: a [B] long tensor on x_0's device, one uniform draw from 0..T-1 per example, new at every call."""
    x_0 = images(config, 6)
    seen = observe(observe_forward, diffusion_class, config, x_0, images(config, 7), labels(config, 8), 2)
    calls = checks.forward_result(seen, "self.p_losses(x_0, t, noise, y)")
    checks.time_steps(calls[0]["t"], calls[1]["t"], x_0, config["T"])


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
    img, y = images(config, 9), labels(config, 10)
    seen = observe(observe_loop, diffusion_class, config, img, y)
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
    calls, wanted = seen["loop_calls"], (batch, channels, size, size)
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
    for call_seen in calls or steps:  # through self.p_sample_loop, or its own loop over self.p_sample
        passed_on(call_seen, y, config, "sample", "p_sample_loop" if calls else "p_sample")
    start = calls[0]["img"] if calls else steps[0]["x"]
    if not torch.equal(start, x_T):
        fail("sample did not pass the x_T drawn by noise_like to p_sample_loop")
    if not calls and [s["t_index"] for s in steps] != list(range(config["T"] - 1, -1, -1)):
        fail("sample's own loop must call p_sample for t_index = T-1, ..., 0, each step on the last one's output; "
             "or call self.p_sample_loop(x_T, y, w, threshold)")
    checks.mapped(seen["got"], chain(x_T, config["T"]), wanted, "x_0", "p_sample_loop(x_T, y, w, threshold)")


@pytest.mark.parametrize("case", reference_cases("sample"), ids=case_id)
def test_sample(diffusion_class, case):
    """sample end to end: x_T from noise_like, your loop, p_sample, guided_noise and threshold, mapped to [0, 1]."""
    check_reference(diffusion_class, case)


def test_sample_on_a_gpu(diffusion_class):
    check_on_gpu(diffusion_class, "sample")


# ----------------------------------------------------------------------------
# Observations: run your code, record what it did
# ----------------------------------------------------------------------------


def build(diffusion_class, config: dict, model_state=None, device=DEVICE):
    model = StandInModel(config["C"], config["T"], config["K"])
    if model_state is not None:
        model.load_state_dict(model_state)
    diffusion = diffusion_class(model, image_size=config["size"], num_classes=config["K"], channels=config["C"],
                                timesteps=config["T"], p_uncond=config["p"])
    return diffusion.to(device) if device is not None else diffusion


def build_for_case(diffusion_class, case: dict):
    """The object a reference case runs on: the stand-in with the case's weights, fixed noise_like and
    uniform_like, and the spies that hand p_losses and p_sample the right intermediate values."""
    diffusion = build(diffusion_class, case["config"], case["model"])
    set_seams(diffusion, case, "drop_labels")
    if "q_sample_returns" in case:
        spy_q_sample(diffusion, [a.to(DEVICE) for a in case["args"][:3]], case["q_sample_returns"].to(DEVICE))
    return diffusion


def set_seams(diffusion, case: dict, function: str) -> dict:
    """The case's noise and uniform numbers; uniform_like only where labels are dropped."""
    diffusion.noise_like = Sequence("noise_like", case["noise_like"], case["noise_like_calls"], DEVICE)
    if function == "drop_labels":
        diffusion.uniform_like = Sequence("uniform_like", case["uniform_like"], 1, DEVICE, hint=(
            ": the dropout needs one number per example, shape [B] (uniform_like(y.shape, y.device))"))
        return {"noise_like": diffusion.noise_like, "uniform_like": diffusion.uniform_like}
    diffusion.uniform_like = forbid(
        "p_losses called uniform_like (through drop_labels?): forward drops the labels once; p_losses uses y as it "
        "is given" if function == "p_losses" else f"{function} called uniform_like (through drop_labels?): label "
        "dropout is for training only; sampling uses y and the null label as they are")
    return {"noise_like": diffusion.noise_like}


@PART.observes_cases
@observation
def observe_case(diffusion_class, function: str, case: dict) -> dict:
    """Run `function` on a reference case's inputs twice on the same object, each time with fresh seams."""
    diffusion = build_for_case(diffusion_class, case)
    counts = spy_guidance_and_threshold(diffusion, case) if function == "p_sample" else {}

    def inspect(out, args, seen) -> None:
        if function == "p_losses" and "requires_grad" not in seen:
            seen["requires_grad"] = isinstance(out, torch.Tensor) and out.requires_grad
        for name, given, used in zip(ARGUMENT_NAMES[function], case["args"], args):
            if isinstance(given, torch.Tensor) and not torch.equal(used.cpu(), given) and name not in seen["changed_arguments"]:
                seen["changed_arguments"].append(name)

    seen = run_twice(function, diffusion, case, DEVICE, lambda: set_seams(diffusion, case, function), inspect=inspect)
    seen["notes"] = []
    if function == "p_sample" and not counts["guided_noise"]:
        seen["notes"].append("p_sample never called self.guided_noise: eps_bar comes from self.guided_noise(x, t, y, w) "
                             "(calling the model directly ignores w)")
    if function == "p_sample" and not counts["threshold"]:
        seen["notes"].append("p_sample never called self.threshold: x0_hat = self.threshold(x0_hat, threshold) applies "
                             "the method asked for (Part 1's clamp is only `static`)")
    return seen


ARGUMENT_NAMES = {"drop_labels": ("labels",), "p_losses": ("x_0", "t", "noise", "labels"),
                  "guided_noise": ("x_t", "t", "labels"), "threshold": ("x0_hat",),
                  "p_sample": ("x_t", "t", "t_index", "labels"), "p_sample_loop": ("x_T", "labels"), "sample": ()}


@observation
def observe_drop_labels(diffusion_class, config: dict, y: torch.Tensor) -> dict:
    diffusion = build(diffusion_class, config)
    diffusion.uniform_like = uniform = Recording(DEVICE, low=0.0)
    got = call("drop_labels", diffusion.drop_labels, y.clone())
    return {"got": got, "uniform_like": uniform.calls}


@observation
def observe_forward(diffusion_class, config: dict, x_0: torch.Tensor, noise, y: torch.Tensor, repeats: int) -> dict:
    """forward(x_0, y, noise) `repeats` times on one object, with spies for p_losses, drop_labels and noise_like."""
    diffusion = build(diffusion_class, config)
    diffusion.noise_like = noise_like = Recording(DEVICE)
    diffusion.uniform_like = Recording(DEVICE, low=0.0)
    calls = spy_p_losses(diffusion, ("x_0", "t", "noise", "y"), DEVICE)
    drops = spy_drop_labels(diffusion, config["K"])
    got = []
    for _ in range(repeats):
        arguments = (x_0.clone(), y.clone()) if noise is None else (x_0.clone(), y.clone(), noise.clone())
        got.append(call("forward", diffusion.forward, *arguments))
    return {"got": got, "p_losses_calls": calls, "drop_calls": drops, "noise_like": noise_like.calls,
            "noise_like_returned": noise_like.returned}


@observation
def observe_loop(diffusion_class, config: dict, img: torch.Tensor, y: torch.Tensor) -> dict:
    diffusion = build(diffusion_class, config)
    diffusion.noise_like = Recording(DEVICE)
    steps = spy_p_sample(diffusion, ("x", "t", "t_index", *SAMPLE_ARGUMENTS), DEFAULTS)
    got = call("p_sample_loop", diffusion.p_sample_loop, img.clone(), y.clone(), config["w"], config["threshold"])
    return {"got": got, "steps": steps}


@observation
def observe_sample(diffusion_class, config: dict, y: list) -> dict:
    diffusion = build(diffusion_class, config)
    diffusion.noise_like = noise_like = Recording(DEVICE)
    calls = spy_p_sample_loop(diffusion, ("img", *SAMPLE_ARGUMENTS), DEFAULTS)
    steps = spy_p_sample(diffusion, ("x", "t", "t_index", *SAMPLE_ARGUMENTS), DEFAULTS)
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
        diffusion.noise_like = noise_like = Recording(DEVICE)
        diffusion.uniform_like = uniform = Recording(DEVICE, low=0.0)
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
                calls = spy_p_losses(diffusion, ("x_0", "t", "noise", "y"), DEVICE)
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
                steps = spy_p_sample(diffusion, ("x", "t", "t_index", *SAMPLE_ARGUMENTS), DEFAULTS)
                out = call(function, diffusion.p_sample_loop, x, y, 2.0, "static")
                seen["inputs"] = "img"
                wrong = [s for s in steps if isinstance(s["t"], torch.Tensor) and str(s["t"].device) != str(gpu)]
                seen["created"] = {"t": str(wrong[0]["t"].device)} if wrong else {}
            else:
                spy_p_sample_loop(diffusion, ("img", *SAMPLE_ARGUMENTS), DEFAULTS)
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
# The spies of Part 2's own functions
# ----------------------------------------------------------------------------


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


def spy_drop_labels(diffusion, num_classes: int) -> list[dict]:
    """drop_labels returns a known relabelling ((y + 1) mod (K + 1)), so forward's use of it shows."""
    def drop_labels(bound: dict, k: int) -> torch.Tensor:
        if not isinstance(bound["y"], torch.Tensor):
            raise GradingError(f"passed {type(bound['y']).__name__} to drop_labels; pass the labels, a [B] long tensor")
        return (bound["y"] + 1) % (num_classes + 1)
    return spy(diffusion, "drop_labels", ("y",), drop_labels)
