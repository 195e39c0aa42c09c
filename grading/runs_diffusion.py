"""How Part 1's tests (test_diffusion.py) run your code: GaussianDiffusion around the stand-in noise predictor.

The @observation functions build that object, run your functions through grading.call and return
plain data; the tests judge it (in the grader, from its sandbox).
"""

from __future__ import annotations

import os

import torch

import grading
from grading import call, observation
from grading.cases import run_twice
from grading.seams import Recording, Sequence
from grading.stand_ins import (
    StandInModel,
    spy_p_losses,
    spy_p_sample,
    spy_p_sample_loop,
    spy_q_sample,
)

TESTS = "test_diffusion"  # the part's test module: grading.find_observation imports it in the sandbox
DEVICE = torch.device(os.environ.get("DIFFUSION_TEST_DEVICE", "cpu"))


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
