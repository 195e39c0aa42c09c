"""How Part 3's tests (test_energy.py) run your code: EnergyModel around the stand-in energy.

The @observation functions build that object, run your functions through grading.call and return
plain data; the tests judge it (in the grader, from its sandbox).
"""

from __future__ import annotations

import os

import pytest
import torch

from grading import call, observation
from grading.cases import run_twice
from grading.checks import describe
from grading.seams import Recording, ReplaySequence, Sequence, spy
from grading.stand_ins import (
    StandInEnergy,
    energy_weights,
    images,
    spy_langevin,
)

TESTS = "test_energy"  # the part's test module: grading.find_observation imports it in the sandbox
DEVICE = torch.device(os.environ.get("ENERGY_TEST_DEVICE", "cpu"))


# ----------------------------------------------------------------------------
# Observations: run your code, record what it did
# ----------------------------------------------------------------------------


def build(model_class, channels: int, image_size: int, energy_state=None, **settings):
    """The class under test around the stand-in energy, on DEVICE."""
    energy = StandInEnergy(channels)
    if energy_state is not None:
        energy.load_state_dict(energy_state)
    config = {"step_size": 0.1, "noise_scale": 0.05, "langevin_steps": 3, "alpha": 0.2, "buffer_size": 8,
              "sample_steps": 4, **settings}
    return model_class(energy, image_size=image_size, channels=channels, **config).to(DEVICE)


def build_for_case(model_class, case: dict):
    """The object a reference case runs on: the stand-in energy with the case's weights and replay buffer,
    and its noise_like, uniform_like and draw_replay handing out the case's values."""
    config = case["config"]
    model = build(model_class, config["channels"], config["image_size"], case["energy"],
                  **{k: v for k, v in config.items() if k not in ("channels", "image_size")})
    with torch.no_grad():
        model.replay.copy_(case["replay"].to(DEVICE))
    model.noise_like = Sequence("noise_like", case["noise_like"], case["noise_like_calls"], DEVICE)
    model.uniform_like = Sequence("uniform_like", case["uniform_like"], case["uniform_like_calls"], DEVICE)
    model.draw_replay = ReplaySequence(case["draw_replay"], DEVICE)
    return model


def case_output(model, function: str, out, seen: dict):
    """What a reference case compares: the buffer after update_buffer, the x of sample_buffer's pair,
    and for loss the vector [loss, dloss/dweights...] (the gradient shows which energies it trains)."""
    if function == "update_buffer":
        return model.replay.detach().clone()
    if function == "sample_buffer":
        if not (isinstance(out, tuple) and len(out) == 2):
            seen["problem"] = f"sample_buffer returned {describe(out)}; it must return the pair (x, idx)"
            return None
        return out[0]
    if function == "loss" and isinstance(out, torch.Tensor) and out.shape == ():
        seen["loss_requires_grad"] = seen["loss_requires_grad"] and out.requires_grad
        params = list(model.energy_net.parameters())
        grads = torch.autograd.grad(out, params, allow_unused=True) if out.requires_grad else [None] * len(params)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        return torch.cat([out.detach().reshape(1)] + [g.detach().flatten() for g in grads])
    return out


@observation
def observe_case(model_class, function: str, case: dict) -> dict:
    """Run `function` on a reference case's inputs twice, on the same object, each time with fresh noise."""
    model = build_for_case(model_class, case)
    extra = {"loss_requires_grad": True, "problem": None}

    def fresh_seams() -> dict:
        with torch.no_grad():
            model.replay.copy_(case["replay"].to(DEVICE))
        model.noise_like = Sequence("noise_like", case["noise_like"], case["noise_like_calls"], DEVICE)
        model.uniform_like = Sequence("uniform_like", case["uniform_like"], case["uniform_like_calls"], DEVICE)
        model.draw_replay = ReplaySequence(case["draw_replay"], DEVICE)
        return {"noise_like": model.noise_like, "uniform_like": model.uniform_like}

    seen = run_twice(function, model, case, DEVICE, fresh_seams, output=lambda out: case_output(model, function, out, extra))
    return {**seen, **extra}


@observation
def observe_step_effects(model_class, shape: dict, x: torch.Tensor) -> dict:
    """One langevin_step: its output, the input afterwards, and for each weight whether it changed, got a
    .grad or lost requires_grad."""
    model = build(model_class, shape["C"], shape["size"], energy_weights(shape["C"]))
    model.noise_like = Recording(DEVICE)
    before = {name: p.detach().clone() for name, p in model.energy_net.named_parameters()}
    given = x.clone()
    out = call("langevin_step", model.langevin_step, given)
    return {
        "out": out, "out_requires_grad": isinstance(out, torch.Tensor) and (out.requires_grad or out.grad_fn is not None),
        "x_after": given.detach(),
        "weights": {name: {"requires_grad": p.requires_grad, "grad_filled": p.grad is not None,
                           "changed": not torch.equal(p.detach(), before[name])}
                    for name, p in model.energy_net.named_parameters()},
    }


@observation
def observe_step_under_no_grad(model_class, shape: dict, x: torch.Tensor) -> dict:
    """langevin_step on the same input and noise, normally and inside torch.no_grad()."""
    model = build(model_class, shape["C"], shape["size"], energy_weights(shape["C"]))
    model.noise_like = Recording(DEVICE)
    plain = call("langevin_step", model.langevin_step, x.clone())

    def without_gradients(x):
        with torch.no_grad():
            return model.langevin_step(x)

    model.noise_like = Recording(DEVICE)
    try:
        return {"plain": plain, "no_grad": call("langevin_step", without_gradients, x.clone()), "error": None}
    except pytest.fail.Exception as failure:
        return {"plain": plain, "no_grad": None, "error": str(failure.msg)}


@observation
def observe_langevin_loop(model_class, config: dict, x: torch.Tensor) -> dict:
    model = build(model_class, config["C"], config["size"])
    model.noise_like = Recording(DEVICE)
    steps = spy(model, "langevin_step", ("x",), lambda bound, k: bound["x"] * 0.9 + 0.01 * k)
    got = call("langevin_sample", model.langevin_sample, x.clone(), config["steps"])
    return {"got": got, "steps": steps}


@observation
def observe_loss_graph(model_class, shape: dict, x_real: torch.Tensor, x_fake: torch.Tensor) -> dict:
    """The loss on a leaf x_fake that requires grad: does the loss reach the weights, and x_fake?"""
    model = build(model_class, shape["C"], shape["size"], energy_weights(shape["C"]))
    x_fake = x_fake.clone().requires_grad_(True)
    loss = call("loss", model.loss, x_real.clone(), x_fake)
    scalar = isinstance(loss, torch.Tensor) and loss.shape == ()
    requires_grad = scalar and loss.requires_grad
    fake_grad = requires_grad and torch.autograd.grad(loss, x_fake, allow_unused=True)[0] is not None
    return {"loss": loss, "scalar": scalar, "requires_grad": requires_grad, "fake_gets_gradient": fake_grad}


@observation
def observe_buffer_copy(model_class, shape: dict, idx: torch.Tensor) -> dict:
    """sample_buffer with no fresh chains; then the returned x is overwritten: does the buffer change?"""
    model = build(model_class, shape["C"], shape["size"], buffer_size=8)
    with torch.no_grad():
        model.replay.copy_(images(dict(shape, B=8), 6, DEVICE, low=-0.9))
    before = model.replay.clone()
    model.draw_replay = ReplaySequence([(idx, torch.zeros(len(idx), dtype=torch.bool))], DEVICE)
    model.uniform_like = Recording(DEVICE, low=-1.0)
    got = call("sample_buffer", model.sample_buffer, shape["B"])
    if not (isinstance(got, tuple) and len(got) == 2):
        return {"pair": False, "returned": describe(got)}
    x, got_idx = got
    if isinstance(x, torch.Tensor):
        x.data.fill_(0.5)  # the caller owns x: changing it must not change the buffer
    return {"pair": True, "idx": got_idx, "replay_changed": not torch.equal(model.replay, before)}


@observation
def observe_buffer_graph(model_class, shape: dict, x: torch.Tensor) -> dict:
    model = build(model_class, shape["C"], shape["size"], buffer_size=8)
    samples = x.clone().requires_grad_(True) * 1.0  # a result of computation, as Langevin samples can be
    call("update_buffer", model.update_buffer, samples, torch.arange(shape["B"], device=DEVICE))
    return {"replay_requires_grad": model.replay.requires_grad or model.replay.grad_fn is not None}


@observation
def observe_forward(model_class, config: dict, x_real: torch.Tensor, x_init: torch.Tensor, idx: torch.Tensor) -> dict:
    """forward(x_real) with spies for sample_buffer, langevin_sample, update_buffer and loss."""
    model = build(model_class, config["C"], config["size"], langevin_steps=config["K"], buffer_size=8)
    model.noise_like, model.uniform_like = Recording(DEVICE), Recording(DEVICE, low=-1.0)
    seen = {
        "sample_buffer": spy(model, "sample_buffer", ("batch_size",), lambda bound, k: (x_init.clone(), idx.clone())),
        **spy_langevin(model),
        "update_buffer": spy(model, "update_buffer", ("x", "idx"), lambda bound, k: None),
        "loss": spy(model, "loss", ("x_real", "x_fake"), lambda bound, k: torch.tensor(0.5 + k, device=DEVICE)),
    }
    seen["got"] = call("forward", model.forward, x_real.clone())
    return seen


@observation
def observe_sample(model_class, config: dict) -> dict:
    model = build(model_class, config["C"], config["size"], sample_steps=config["sample_steps"])
    uniform, gaussian = Recording(DEVICE, low=-1.0), Recording(DEVICE)
    model.uniform_like, model.noise_like = uniform, gaussian
    chains = spy_langevin(model)
    got = call("sample", model.sample, config["B"])
    return {"got": got, **chains, "uniform_like": uniform.calls, "uniform_returned": uniform.returned,
            "noise_like": gaussian.calls, "model_device": str(model.replay.device)}
