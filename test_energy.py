"""Checks for the seven EnergyModel functions you write in energy.py (Part 3).

    pytest test_energy.py                        # everything, a few seconds on a laptop CPU
    pytest test_energy.py -k langevin_step       # the tests of one function

How the checks work
- A tiny deterministic stand-in energy (`grading.stand_ins.StandInEnergy`, not the CNN) plays E(x), so the
  expected values do not change when the network does.
- The sources of randomness (`noise_like`, `uniform_like`, `draw_replay`) are replaced by fixed
  tensors. Every input, every noise tensor, the stand-in's weights, the replay buffer and every
  expected output are stored in data/reference/public_energy.pt, so the checks never depend on
  the random number generator of your torch version.
- Besides the values, the tests check what the method needs: the gradient is taken with respect
  to x, not the weights; no graph survives a step; sampling neither changes the weights nor fills
  their .grad; the loss does not differentiate through the fake samples. `forward` and `sample`
  are judged with spies: what they pass to the functions they call.
- Each test first runs your code in an `observe_*` function (below the tests), which returns
  what it saw; the test then judges that. The machinery shared with the other parts (the stand-in
  energy, the fixed randomness, the spies, the comparison) is in the grading/ package.

Reading a failure
Each failure names the function and the case, then says what differs: the largest error, where
it is and your value next to the expected one. When your output equals the output of a common
mistake stored in the reference file (in every case where it is stored), the message names the
mistake and the equation it breaks. "<name>: not implemented yet" means the function still raises
NotImplementedError. Tolerance: |yours - expected| <= 1e-5 + 1e-5 max|expected| (the largest entry sets the scale).

Replay a failing case in Python, e.g. test_langevin_step[clamped-B2-C3-6x6]:

    import test_energy as te
    case = te.reference_case("langevin_step", "clamped-B2-C3-6x6")
    model = te.build_for_case(te.EnergyModel, case)   # stand-in energy, fixed noise, the case's buffer
    x = model.langevin_step(*case["args"])
    print((x - case["expected"]).abs().max())

Environment variables
    ENERGY_REFERENCE        another reference file (the autograder's hidden set uses this)
    ENERGY_TEST_DEVICE      run on another device, e.g. cuda (default: cpu)
    DIFFUSION_TEST_TIMEOUT  seconds one call of your function may take (default: 10)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import grading
from grading import call, close, fail, observation, observe, times
from grading.cases import Part, case_id, run_twice
from grading.seams import Recording, ReplaySequence, Sequence, spy
from grading.stand_ins import StandInEnergy

FUNCTIONS = ("langevin_step", "langevin_sample", "loss", "sample_buffer", "update_buffer", "forward", "sample")
grading.register(__file__, FUNCTIONS, hints=[
    (r"element 0 of tensors does not require grad|does not require grad and does not have a grad_fn",
     "Autograd can only differentiate E(x) with respect to x if x requires grad: start from "
     "a detached copy of x with requires_grad on, and compute E(x) inside `with torch.enable_grad():`."),
])
EnergyModel = grading.import_student("energy", "EnergyModel")
DEVICE = torch.device(os.environ.get("ENERGY_TEST_DEVICE", "cpu"))
PART = Part(
    functions=FUNCTIONS, device=DEVICE, seams=("noise_like", "uniform_like"),
    reference_file=os.environ.get("ENERGY_REFERENCE") or Path(__file__).resolve().parent / "data" / "reference" / "public_energy.pt",
    what={"langevin_step": "x after the step", "langevin_sample": "x after the steps", "loss": "the loss",
          "sample_buffer": "the starting points x", "update_buffer": "the replay buffer after the update"},
    inputs=("config", "energy", "replay", "args", "noise_like", "noise_like_calls", "uniform_like", "uniform_like_calls",
            "draw_replay"),
    depends_on={"langevin_sample": ("langevin_step",)})  # end to end, test_langevin_sample runs your langevin_step
DEPENDS_ON, REFERENCE, reference_cases, reference_case = PART.depends_on, PART.reference, PART.cases, PART.case

# An infinite loop fails its call after DIFFUSION_TEST_TIMEOUT s; this stops a test that makes many calls.
pytestmark = pytest.mark.timeout(max(60.0, 6 * grading.TIME_LIMIT_S))


def config_id(config: dict) -> str:
    extra = "".join(f"-{k}{v}" for k, v in config.items() if k not in ("B", "C", "size"))
    return f"B{config['B']}-C{config['C']}-{config['size']}x{config['size']}{extra}"


def check_reference(model_class, case: dict) -> None:
    PART.check(model_class, case)


def images(config: dict, seed: int) -> torch.Tensor:
    return grading.stand_ins.images(config, seed, DEVICE, low=-0.9)

# The property and spy tests' settings: batch B, channels C, image size, step counts (K other than
# the defaults catch a hard-coded number).
SHAPES = [dict(B=3, C=3, size=4), dict(B=2, C=1, size=8)]
STEPS = [dict(B=2, C=3, size=4, steps=4), dict(B=3, C=1, size=4, steps=1), dict(B=2, C=3, size=4, steps=0)]
METHOD = [dict(B=3, C=3, size=4, K=7, sample_steps=5), dict(B=2, C=1, size=8, K=3, sample_steps=11)]


@pytest.fixture
def model_class():
    """The class under test: your EnergyModel."""
    return EnergyModel


# ----------------------------------------------------------------------------
# The tests, function by function (the machinery they use follows below)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", reference_cases("langevin_step"), ids=case_id)
def test_langevin_step(model_class, case):
    """x' = clamp(x - step_size * grad_x E(x) + noise_scale * z, -1, 1), z from noise_like."""
    check_reference(model_class, case)


@pytest.mark.parametrize("shape", SHAPES, ids=config_id)
def test_langevin_step_moves_x_not_the_weights(model_class, shape):
    """langevin_step returns a detached x and leaves the weights, their .grad and requires_grad alone."""
    x = images(shape, 1)
    seen = observe(observe_step_effects, model_class, shape, x)
    out = seen["out"]
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        fail(f"langevin_step returned {describe(out)}; expected x's shape {list(x.shape)}")
    if seen["out_requires_grad"]:
        fail("langevin_step returned a tensor still attached to the autograd graph: the graph is kept across steps "
             "(each step would hold every earlier step's graph in memory, and backpropagate through them). "
             "Return the new x detached: compute it from x.detach(), or call .detach() on the result")
    if not torch.equal(seen["x_after"], x):
        fail("langevin_step changed its input x in place; compute the new x as a new tensor")
    for name, weight in seen["weights"].items():
        if not weight["requires_grad"]:
            fail(f"langevin_step left the weight {name} with requires_grad=False: weights left frozen after sampling. "
                 "If you turn requires_grad off while sampling, turn it back on; torch.autograd.grad(E, x) needs neither")
        if weight["grad_filled"]:
            fail(f"langevin_step filled the .grad of the weight {name}: gradients accumulated into the weights during "
                 "sampling (they would be added to the next training step's gradient). Take the gradient with respect "
                 "to x only: torch.autograd.grad(E(x).sum(), x)")
        if weight["changed"]:
            fail(f"langevin_step changed the weight {name}: weights updated during sampling. Langevin dynamics moves "
                 "the images x along -grad_x E(x); the weights stay as they are")


@pytest.mark.parametrize("shape", SHAPES, ids=config_id)
def test_langevin_step_under_no_grad(model_class, shape):
    """langevin_step works when called inside torch.no_grad() (as sampling code often is)."""
    seen = observe(observe_step_under_no_grad, model_class, shape, images(shape, 2))
    if seen["error"]:
        fail(f"langevin_step fails inside torch.no_grad() ({seen['error'][:300]}): compute the gradient inside "
             "`with torch.enable_grad():`, which turns autograd back on")
    if not (isinstance(seen["no_grad"], torch.Tensor) and close(seen["no_grad"], seen["plain"])):
        fail("langevin_step gives another result inside torch.no_grad() than outside it: compute the gradient inside "
             "`with torch.enable_grad():`")


@pytest.mark.parametrize("config", STEPS, ids=config_id)
def test_langevin_sample_steps(model_class, config):
    """langevin_sample(x, steps) calls langevin_step `steps` times, each on the previous step's output."""
    x = images(config, 3)
    seen = observe(observe_langevin_loop, model_class, config, x)
    steps, got, wanted = seen["steps"], seen["got"], config["steps"]
    if len(steps) != wanted:
        fail(f"langevin_sample(x, steps={wanted}) called langevin_step {times(len(steps))}; it must call it "
             f"exactly `steps` = {wanted} times" + (" (an off-by-one in the loop?)" if abs(len(steps) - wanted) == 1 else ""))
    for k, step in enumerate(steps):
        previous = x if k == 0 else steps[k - 1]["out"]
        if not same_tensor(step["x"], previous):
            source = "x" if k == 0 else "the previous step's output"
            fail(f"langevin_sample: step {k + 1} did not start from {source}; each step continues from the last: "
                 "x = self.langevin_step(x)")
    last = steps[-1]["out"] if steps else x
    if not same_tensor(got, last):
        fail("langevin_sample must return " + ("the last step's output" if steps else "x unchanged (steps = 0)"))


@pytest.mark.parametrize("case", reference_cases("langevin_sample"), ids=case_id)
def test_langevin_sample(model_class, case):
    """`steps` Langevin steps from a fixed x with fixed noise, through your langevin_step."""
    check_reference(model_class, case)


@pytest.mark.parametrize("case", reference_cases("loss"), ids=case_id)
def test_loss(model_class, case):
    """mean E(x_real) - mean E(x_fake) + alpha mean(E(x_real)^2 + E(x_fake)^2), and its gradient."""
    check_reference(model_class, case)


@pytest.mark.parametrize("shape", SHAPES, ids=config_id)
def test_loss_detaches_the_fakes(model_class, shape):
    """The loss trains the weights and sends no gradient into x_fake."""
    seen = observe(observe_loss_graph, model_class, shape, images(shape, 4), images(shape, 5))
    if not seen["scalar"]:
        fail(f"loss returned {describe(seen['loss'])}; expected a scalar tensor")
    if not seen["requires_grad"]:
        fail("loss: the loss carries no gradient to the weights (requires_grad False): compute it from the energies "
             "with torch operations, outside torch.no_grad(), so that backward() can train the weights")
    if seen["fake_gets_gradient"]:
        fail("loss sends gradients into x_fake: fake samples not detached in the loss. Use E(x_fake.detach()): the "
             "loss trains the weights, never the Langevin chain that made the samples")


@pytest.mark.parametrize("case", reference_cases("sample_buffer"), ids=case_id)
def test_sample_buffer(model_class, case):
    """95% of the chains start from replay[idx], the fresh ones (5%) from uniform_like's noise."""
    check_reference(model_class, case)


@pytest.mark.parametrize("shape", SHAPES, ids=config_id)
def test_sample_buffer_returns_a_copy(model_class, shape):
    """sample_buffer returns (x, idx) with draw_replay's idx, and x does not share memory with the buffer."""
    idx = torch.tensor([6, 1, 3][: shape["B"]], device=DEVICE)
    seen = observe(observe_buffer_copy, model_class, shape, idx)
    if not seen["pair"]:
        fail(f"sample_buffer returned {seen['returned']}; it must return the pair (x, idx)")
    if not same_tensor(seen["idx"], idx):
        fail("sample_buffer must return the idx that draw_replay gave it, so that update_buffer writes the chains back "
             "where they came from")
    if seen["replay_changed"]:
        fail("sample_buffer returned a view of the buffer (changing x changed replay): index with self.replay[idx], "
             "which copies, or call .clone()")


@pytest.mark.parametrize("case", reference_cases("update_buffer"), ids=case_id)
def test_update_buffer(model_class, case):
    """replay[idx_b] = x_b for every b; every other slot unchanged."""
    check_reference(model_class, case)


@pytest.mark.parametrize("shape", SHAPES, ids=config_id)
def test_update_buffer_stores_detached(model_class, shape):
    """The buffer keeps values, not a graph."""
    if observe(observe_buffer_graph, model_class, shape, images(shape, 7))["replay_requires_grad"]:
        fail("update_buffer stored samples that are still attached to the autograd graph: the buffer would keep every "
             "step's graph alive. Store x.detach()")


@pytest.mark.parametrize("config", METHOD, ids=config_id)
def test_forward_runs_the_method(model_class, config):
    """forward: sample_buffer(B) -> langevin_sample(x, langevin_steps) -> update_buffer(x_fake, idx) -> loss."""
    x_real, x_init = images(config, 8), images(config, 9)
    idx = torch.tensor([5, 0, 2][: config["B"]], device=DEVICE)
    seen = observe(observe_forward, model_class, config, x_real, x_init, idx)
    buffer_calls, updates, losses = seen["sample_buffer"], seen["update_buffer"], seen["loss"]
    batch = config["B"]
    if len(buffer_calls) != 1 or buffer_calls[0]["batch_size"] != batch:
        asked = [c["batch_size"] for c in buffer_calls]
        fail(f"forward must call self.sample_buffer(B) once with B = {batch}, the batch size of x_real; it called "
             f"it {times(len(asked))}" + (f" with {asked}" if asked else "") + ": the chains start from the buffer")
    start, x_fake = chain_seen(seen, "forward", config["K"], "langevin_steps")
    if not same_tensor(start, x_init):
        fail("forward: the Langevin chains did not start from the x that sample_buffer returned (chains started from "
             "fresh noise instead of the replay buffer?)")
    if not updates:
        fail("forward never called update_buffer: buffer never updated, so every chain restarts from the same old "
             "points. Call update_buffer with the Langevin samples and the idx that sample_buffer returned")
    if len(updates) != 1 or not same_tensor(updates[0]["x"], x_fake) or not same_tensor(updates[0]["idx"], idx):
        wrong = (" (the chains' starting points were written back instead of the Langevin samples)"
                 if same_tensor(updates[0]["x"], x_init) else "")
        fail("forward must call update_buffer once, with langevin_sample's output and the idx "
             f"that sample_buffer returned{wrong}")
    if len(losses) != 1 or not same_tensor(losses[0]["x_real"], x_real) or not same_tensor(losses[0]["x_fake"], x_fake):
        wrong = " (the chains' starting points used as x_fake?)" if losses and same_tensor(losses[0]["x_fake"], x_init) else ""
        fail(f"forward must call self.loss(x_real, x_fake) once, with x_fake = langevin_sample's output{wrong}")
    got = seen["got"]
    if not (isinstance(got, torch.Tensor) and got.shape == () and torch.equal(got, losses[0]["out"])):
        fail("forward must return the loss that self.loss returned, unchanged")


@pytest.mark.parametrize("config", METHOD, ids=config_id)
def test_sample_calls(model_class, config):
    """sample: x = uniform_like((B, C, H, W), device), langevin_sample(x, sample_steps), mapped to [0, 1]."""
    batch, channels, size = config["B"], config["C"], config["size"]
    seen = observe(observe_sample, model_class, config)
    shape = (batch, channels, size, size)
    if not seen["uniform_like"]:
        hint = (" (it drew Gaussian noise with noise_like: the chains start from uniform noise, like the buffer's "
                "fresh chains)") if seen["noise_like"] else ""
        fail(f"sample never called self.uniform_like: start the chains from x = self.uniform_like((B, C, H, W), "
             f"self.device){hint}")
    asked, device = seen["uniform_like"][0]
    if tuple(asked) != shape:
        fail(f"sample asked uniform_like for shape {list(asked)}; the chains need (B, C, H, W) = {list(shape)}")
    if device not in ("None", seen["model_device"]):
        fail(f"sample asked uniform_like for noise on {device}; sample on the model's device, self.device")
    start, out = chain_seen(seen, "sample", config["sample_steps"], "sample_steps")
    if not same_tensor(start, seen["uniform_returned"][0]):
        fail("sample must run the Langevin chains from the noise that uniform_like returned")
    got = seen["got"]
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != shape:
        fail(f"sample returned {describe(got)}; expected shape {list(shape)}")
    if torch.allclose(got, (out + 1) / 2, rtol=0, atol=1e-6):
        return
    if torch.allclose(got, out, rtol=0, atol=1e-6):
        fail("sample returned results in [-1, 1] instead of [0, 1]: map x with (x + 1) / 2")
    if torch.allclose(got, out.clamp(0, 1), rtol=0, atol=1e-6):
        fail("sample clamped x to [0, 1] instead of mapping it: use (x + 1) / 2, which keeps the negative half")
    fail("sample must return (langevin_sample(x, sample_steps) + 1) / 2: images in [0, 1]")


# ----------------------------------------------------------------------------
# Judging reference cases: the loss with its gradient
# ----------------------------------------------------------------------------


@PART.comparing
def compare(function: str, got, expected: torch.Tensor, seen: dict) -> str | None:
    """loss is compared as [loss, dloss/dweights...]: the gradient shows which energies it trains."""
    if function != "loss":
        return grading.difference(PART.what[function], got, expected)
    problem = grading.difference("the loss", got[0] if isinstance(got, torch.Tensor) else got, expected[0])
    if problem is None and not seen["loss_requires_grad"]:
        return ("the loss carries no gradient to the weights (requires_grad False): compute it from the energies "
                "with torch operations, outside torch.no_grad()")
    if problem is None and grading.difference("", got[1:], expected[1:]) is not None:
        return ("the loss has the right value but the wrong gradient with respect to the energy's weights: both "
                "E(x_real) and E(x_fake) must be computed with the weights in the graph (detach x_fake, not its energy)")
    return problem


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


@PART.observes_cases
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
    model = build(model_class, shape["C"], shape["size"], weights(shape["C"]))
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
    model = build(model_class, shape["C"], shape["size"], weights(shape["C"]))
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
    model = build(model_class, shape["C"], shape["size"], weights(shape["C"]))
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
        model.replay.copy_(images(dict(shape, B=8), 6))
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


# ----------------------------------------------------------------------------
# The stand-in energy, the fixed randomness and the spies
# ----------------------------------------------------------------------------


def weights(channels: int) -> dict:
    """Fixed non-trivial stand-in weights for the property tests."""
    generator = torch.Generator().manual_seed(channels)
    return {"mix": torch.randn(channels, channels, generator=generator) * 0.6,
            "spatial": torch.randn(channels, generator=generator) * 0.4,
            "shift": torch.randn(channels, generator=generator) * 0.5,
            "scale": torch.rand(channels, generator=generator) + 0.5,
            "curvature": torch.rand(channels, generator=generator) * 0.8 + 0.2}


def langevin_stand_in(x: torch.Tensor) -> torch.Tensor:
    """What the langevin_step spy returns: a fixed map into (-1, 1), so that chaining shows."""
    return torch.tanh(2 * x + 0.3)


def chain(x: torch.Tensor, steps: int) -> torch.Tensor:
    """What the langevin_sample spy returns: `steps` runs of the langevin_step spy (so that code running its
    own loop over self.langevin_step gets the same samples as code calling self.langevin_sample)."""
    for _ in range(steps):
        x = langevin_stand_in(x)
    return x


def spy_langevin(model) -> dict[str, list[dict]]:
    """Spies for langevin_sample and langevin_step that agree with each other."""
    return {"langevin_sample": spy(model, "langevin_sample", ("x", "steps"), lambda bound, k: chain(bound["x"], bound["steps"])),
            "langevin_step": spy(model, "langevin_step", ("x",), lambda bound, k: langevin_stand_in(bound["x"]))}


def chain_seen(seen: dict, function: str, wanted_steps: int, setting: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(start, samples) of the Langevin chain that `function` ran, through self.langevin_sample once or its own
    loop over self.langevin_step; fails naming what is wrong with it."""
    chains, steps = seen["langevin_sample"], seen["langevin_step"]
    if len(chains) > 1 or (not chains and not steps):
        fail(f"{function} called langevin_sample {times(len(chains))}; call it once: "
             f"self.langevin_sample(x, self.{setting})")
    if chains:
        if chains[0]["steps"] != wanted_steps:
            fail(f"{function} ran langevin_sample with steps = {chains[0]['steps']!r}; use self.{setting} = {wanted_steps}")
        return chains[0]["x"], chains[0]["out"]
    if len(steps) != wanted_steps:
        fail(f"{function} ran langevin_step {times(len(steps))}; run self.{setting} = {wanted_steps} steps "
             f"(self.langevin_sample(x, self.{setting}) does)")
    for previous, step in zip(steps, steps[1:]):
        if not same_tensor(step["x"], previous["out"]):
            fail(f"{function}: a Langevin step did not start from the previous step's output: x = self.langevin_step(x)")
    return steps[0]["x"], steps[-1]["out"]


def same_tensor(a, b) -> bool:
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)


def describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {grading.dtype_name(value)} tensor of shape {list(value.shape)}"
    return grading.type_name(value) + (" (a missing `return`?)" if value is None else "")
