"""How Part 2's tests (test_conditional.py) run your code: ConditionalGaussianDiffusion around the class-conditional stand-in.

The @observation functions build that object, run your functions through grading.call and return
plain data; the tests judge it (in the grader, from its sandbox).
"""

from __future__ import annotations

import os

import torch

import grading
from grading import GradingError, call, close, observation
from grading.cases import run_twice
from grading.seams import Recording, Sequence, bind, forbid, spy
from grading.stand_ins import (
    StandInModel,
    spy_p_losses,
    spy_p_sample,
    spy_p_sample_loop,
    spy_q_sample,
)

TESTS = "test_conditional"  # the part's test module: grading.find_observation imports it in the sandbox
DEVICE = torch.device(os.environ.get("DIFFUSION_TEST_DEVICE", "cpu"))
SAMPLE_ARGUMENTS = ("y", "w", "threshold")  # what p_sample and p_sample_loop take after their own arguments
DEFAULTS = {"w": 0.0, "threshold": "static"}


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
