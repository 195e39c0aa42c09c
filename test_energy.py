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
- Each test first runs your code in an `observe_*` function (grading/runs_energy.py), which returns
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
    from grading.runs_energy import build_for_case
    case = te.reference_case("langevin_step", "clamped-B2-C3-6x6")
    model = build_for_case(te.EnergyModel, case)   # stand-in energy, fixed noise, the case's buffer
    x = model.langevin_step(*case["args"])
    print((x - case["expected"]).abs().max())

Environment variables: ENERGY_REFERENCE names another reference file (the autograder's hidden set uses
this), ENERGY_TEST_DEVICE another device (e.g. cuda; default cpu), DIFFUSION_TEST_TIMEOUT the seconds one
call of your function may take (default 10).
"""

from __future__ import annotations

import pytest
import torch

import grading
from grading import checks, close, fail, observe, times
from grading import runs_energy as run
from grading.cases import Part, reference_tests
from grading.checks import describe, same_tensor

FUNCTIONS = ("langevin_step", "langevin_sample", "loss", "sample_buffer", "update_buffer", "forward", "sample")
DEVICE = run.DEVICE
PART = Part(
    __file__, FUNCTIONS, student=("energy", "EnergyModel"), reference_file=("ENERGY_REFERENCE", "public_energy.pt"),
    what={"langevin_step": "x after the step", "langevin_sample": "x after the steps", "loss": "the loss",
          "sample_buffer": "the starting points x", "update_buffer": "the replay buffer after the update"},
    inputs=("config", "energy", "replay", "args", "noise_like", "noise_like_calls", "uniform_like", "uniform_like_calls",
            "draw_replay"),
    observe_case=run.observe_case, device=DEVICE, seams=("noise_like", "uniform_like"), fixture_name="model_class",
    depends_on={"langevin_sample": ("langevin_step",)},  # end to end, test_langevin_sample runs your langevin_step
    error_hints=[(r"element 0 of tensors does not require grad|does not require grad and does not have a grad_fn",
                  "Autograd can only differentiate E(x) with respect to x if x requires grad: start from a detached "
                  "copy of x with requires_grad on, and compute E(x) inside `with torch.enable_grad():`.")])
EnergyModel, model_class = PART.student_class, PART.fixture()
DEPENDS_ON, REFERENCE, reference_cases, reference_case = PART.depends_on, PART.reference, PART.cases, PART.case
check_reference = PART.check

# The property and spy tests' settings: batch B, channels C, image size, step counts (K other than
# the defaults catch a hard-coded number). Each call of your code stops after DIFFUSION_TEST_TIMEOUT s.
SHAPES = [dict(B=3, C=3, size=4), dict(B=2, C=1, size=8)]
STEPS = [dict(B=2, C=3, size=4, steps=4), dict(B=3, C=1, size=4, steps=1), dict(B=2, C=3, size=4, steps=0)]
METHOD = [dict(B=3, C=3, size=4, K=7, sample_steps=5), dict(B=2, C=1, size=8, K=3, sample_steps=11)]
pytestmark = pytest.mark.timeout(max(60.0, 6 * grading.TIME_LIMIT_S))


def config_id(config: dict) -> str:
    extra = "".join(f"-{k}{v}" for k, v in config.items() if k not in ("B", "C", "size"))
    return f"B{config['B']}-C{config['C']}-{config['size']}x{config['size']}{extra}"


def images(config: dict, seed: int) -> torch.Tensor:
    return grading.stand_ins.images(config, seed, DEVICE, low=-0.9)


# ----------------------------------------------------------------------------
# The tests, function by function (grading/runs_*.py runs your code for them)
# ----------------------------------------------------------------------------


# Each function's stored cases, test_<function>[case]: your output on fixed inputs and fixed noise against the
# stored one (grading.cases.Part.check says how they differ and names a known mistake).
globals().update(reference_tests(PART, "model_class", {
    "langevin_step": "x' = clamp(x - step_size * grad_x E(x) + noise_scale * z, -1, 1), z from noise_like.",
    "langevin_sample": "`steps` Langevin steps from a fixed x with fixed noise, through your langevin_step.",
    "loss": "mean E(x_real) - mean E(x_fake) + alpha mean(E(x_real)^2 + E(x_fake)^2), and its gradient.",
    "sample_buffer": "most chains start from replay[idx], the fresh ones (reinit_prob) from uniform_like's noise.",
    "update_buffer": "replay[idx_b] = x_b for every b; every other slot unchanged.",
}))


@pytest.mark.parametrize("shape", SHAPES, ids=config_id)
def test_langevin_step_moves_x_not_the_weights(model_class, shape):
    """langevin_step returns a detached x and leaves the weights, their .grad and requires_grad alone."""
    x = images(shape, 1)
    seen = observe(run.observe_step_effects, model_class, shape, x)
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
    seen = observe(run.observe_step_under_no_grad, model_class, shape, images(shape, 2))
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
    seen = observe(run.observe_langevin_loop, model_class, config, x)
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


@pytest.mark.parametrize("shape", SHAPES, ids=config_id)
def test_loss_detaches_the_fakes(model_class, shape):
    """The loss trains the weights and sends no gradient into x_fake."""
    seen = observe(run.observe_loss_graph, model_class, shape, images(shape, 4), images(shape, 5))
    if not seen["scalar"]:
        fail(f"loss returned {describe(seen['loss'])}; expected a scalar tensor")
    if not seen["requires_grad"]:
        fail("loss: the loss carries no gradient to the weights (requires_grad False): compute it from the energies "
             "with torch operations, outside torch.no_grad(), so that backward() can train the weights")
    if seen["fake_gets_gradient"]:
        fail("loss sends gradients into x_fake: fake samples not detached in the loss. Use E(x_fake.detach()): the "
             "loss trains the weights, never the Langevin chain that made the samples")


@pytest.mark.parametrize("shape", SHAPES, ids=config_id)
def test_sample_buffer_returns_a_copy(model_class, shape):
    """sample_buffer returns (x, idx) with draw_replay's idx, and x does not share memory with the buffer."""
    idx = torch.tensor([6, 1, 3][: shape["B"]], device=DEVICE)
    seen = observe(run.observe_buffer_copy, model_class, shape, idx)
    if not seen["pair"]:
        fail(f"sample_buffer returned {seen['returned']}; it must return the pair (x, idx)")
    if not same_tensor(seen["idx"], idx):
        fail("sample_buffer must return the idx that draw_replay gave it, so that update_buffer writes the chains back "
             "where they came from")
    if seen["replay_changed"]:
        fail("sample_buffer returned a view of the buffer (changing x changed replay): index with self.replay[idx], "
             "which copies, or call .clone()")


@pytest.mark.parametrize("shape", SHAPES, ids=config_id)
def test_update_buffer_stores_detached(model_class, shape):
    """The buffer keeps values, not a graph."""
    if observe(run.observe_buffer_graph, model_class, shape, images(shape, 7))["replay_requires_grad"]:
        fail("update_buffer stored samples that are still attached to the autograd graph: the buffer would keep every "
             "step's graph alive. Store x.detach()")


@pytest.mark.parametrize("config", METHOD, ids=config_id)
def test_forward_runs_the_method(model_class, config):
    """forward: sample_buffer(B) -> langevin_sample(x, langevin_steps) -> update_buffer(x_fake, idx) -> loss."""
    x_real, x_init = images(config, 8), images(config, 9)
    idx = torch.tensor([5, 0, 2][: config["B"]], device=DEVICE)
    seen = observe(run.observe_forward, model_class, config, x_real, x_init, idx)
    buffer_calls, updates, losses = seen["sample_buffer"], seen["update_buffer"], seen["loss"]
    batch = config["B"]
    if len(buffer_calls) != 1 or buffer_calls[0]["batch_size"] != batch:
        asked = [c["batch_size"] for c in buffer_calls]
        fail(f"forward must call self.sample_buffer(B) once with B = {batch}, the batch size of x_real; it called "
             f"it {times(len(asked))}" + (f" with {asked}" if asked else "") + ": the chains start from the buffer")
    start, x_fake = checks.langevin_chain(seen, "forward", config["K"], "langevin_steps")
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
    seen = observe(run.observe_sample, model_class, config)
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
    start, out = checks.langevin_chain(seen, "sample", config["sample_steps"], "sample_steps")
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
