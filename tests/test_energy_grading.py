"""test_energy.py (Part 3) is fair and strict: other correct implementations pass, every catalogued
mistake fails its own function's tests with its name, and a stub reads "not implemented yet".

The checks run in-process through `test_energy.run_checks`, which calls the very test functions that
pytest runs on students, with the class under test swapped.
"""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
import torch
from test_reference import assert_fresh  # tests/ is on sys.path under pytest

import grading
import test_energy as te
from energy import EnergyModel
from tools import energy_mistakes, make_energy_reference, make_reference

ROOT = Path(__file__).resolve().parent.parent

REFERENCES = {"public": ROOT / "data" / "reference" / "public_energy.pt",
              "hidden": ROOT / "tools" / "reference" / "hidden_energy.pt"}
# The public set in the fast tier; the hidden set, the same checks again, in the slow one.
SETS = [pytest.param(name, marks=pytest.mark.slow) if name == "hidden" else name for name in sorted(REFERENCES)]


class FreezeAndBackward(EnergyModel):
    """The UvA tutorial's way: freeze the weights, x.grad via backward(), restore; loss from one
    concatenated forward; buffer via index_copy_; keyword calls; in-place Langevin on a clone."""

    def langevin_step(self, x):
        flags = [p.requires_grad for p in self.energy_net.parameters()]
        for p in self.energy_net.parameters():
            p.requires_grad_(False)
        try:
            x = x.clone().detach().requires_grad_(True)
            with torch.enable_grad():
                self.energy_net(x).sum().backward()
            with torch.no_grad():
                x.add_(x.grad, alpha=-self.step_size)
                x.add_(self.noise_like(shape=x.shape, device=x.device) * self.noise_scale)
                x.clamp_(min=-1.0, max=1.0)
            return x.detach()
        finally:
            for p, flag in zip(self.energy_net.parameters(), flags):
                p.requires_grad_(flag)

    def langevin_sample(self, x, steps):
        k = 0
        while k < steps:
            x = self.langevin_step(x=x)
            k += 1
        return x

    def loss(self, x_real, x_fake):
        energies = self.energy_net(torch.cat([x_real, x_fake.detach()]))
        e_real, e_fake = energies[: len(x_real)], energies[len(x_real):]
        return (e_real.mean() - e_fake.mean()) + self.alpha * ((e_real ** 2).mean() + (e_fake ** 2).mean())

    def sample_buffer(self, batch_size):
        idx, fresh = self.draw_replay(batch_size=batch_size)
        x = self.replay.index_select(0, idx)
        noise = self.uniform_like(shape=x.shape, device=x.device)
        x[fresh] = noise[fresh]
        return x, idx

    def update_buffer(self, x, idx):
        with torch.no_grad():
            self.replay.index_copy_(0, idx, x)

    def forward(self, x_real):
        start, slots = self.sample_buffer(batch_size=len(x_real))
        fake = self.langevin_sample(x=start, steps=self.langevin_steps)
        self.update_buffer(x=fake, idx=slots)
        return self.loss(x_real=x_real, x_fake=fake)

    def sample(self, batch_size):
        x = self.uniform_like([batch_size, self.channels, self.image_size, self.image_size], self.replay.device)
        return self.langevin_sample(x, self.sample_steps).add(1).mul(0.5)


class Float64(EnergyModel):
    """The updates and the loss in float64, cast back; the gradient of E.mean() times B; decorated with no_grad."""

    @torch.no_grad()
    def langevin_step(self, x):
        with torch.enable_grad():
            leaf = x.detach().clone().requires_grad_()
            (grad,) = torch.autograd.grad(self.energy_net(leaf).mean() * len(leaf), [leaf])
        z = self.noise_like(x.shape, x.device).double()
        return (x.double() - self.step_size * grad.double() + self.noise_scale * z).clamp(-1, 1).to(x.dtype)

    def loss(self, x_real, x_fake):
        e_real = self.energy_net(x_real).double()
        e_fake = self.energy_net(x_fake.detach()).double()
        total = e_real.mean() - e_fake.mean() + self.alpha * (e_real.square().mean() + e_fake.square().mean())
        return total.float()

    def sample_buffer(self, batch_size):
        idx, fresh = self.draw_replay(batch_size)
        noise = self.uniform_like((batch_size, self.channels, self.image_size, self.image_size), self.device)
        mask = fresh.view(-1, 1, 1, 1).to(noise.dtype)
        return mask * noise + (1 - mask) * self.replay[idx], idx

    def update_buffer(self, x, idx):
        for b in range(len(idx)):
            self.replay[idx[b]] = x[b].detach()


@pytest.fixture(scope="module", params=SETS)
def reference(request):
    return grading.load_reference(REFERENCES[request.param])


def run_checks(model_class, reference: dict) -> dict:
    return grading.run_checks(te, {"model_class": model_class}, reference)


VARIANTS = [EnergyModel, FreezeAndBackward, Float64] + [
    type(name, (EnergyModel,), dict(methods)) for name, methods in sorted(energy_mistakes.ALTERNATIVES.items())]


def test_there_are_ten_other_correct_implementations():
    assert len(VARIANTS) - 1 >= 10


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda c: c.__name__)
def test_correct_implementations_pass(variant, reference):
    results = run_checks(variant, reference)
    assert len(results) >= 25
    failures = {name: message for name, message in results.items() if message}
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


def _group(test_id: str) -> str:
    name = test_id.split("[")[0][len("test_"):]
    return next(f for f in sorted(te.FUNCTIONS, key=len, reverse=True) if name == f or name.startswith(f + "_"))


AFFECTS = {f: {f} | {g for g, deps in te.DEPENDS_ON.items() if f in deps} for f in te.FUNCTIONS}


def test_the_catalogue_covers_the_issue():
    keys = {m.key for m in energy_mistakes.CATALOGUE}
    assert len(keys) == len(energy_mistakes.CATALOGUE) >= 30
    for wanted in ("langevin_step.weights_not_x", "langevin_step.ascent", "langevin_step.keeps_graph",
                   "langevin_step.no_clamp", "langevin_step.weights_updated", "loss.not_detached",
                   "loss.no_regulariser", "loss.regulariser_sign", "update_buffer.never", "forward.no_update"):
        assert wanted in keys


@pytest.mark.slow  # the whole test file once per catalogued mistake
@pytest.mark.parametrize("mistake", energy_mistakes.CATALOGUE, ids=lambda m: m.key)
@pytest.mark.parametrize("name", SETS)
def test_each_mistake_fails_and_is_named(mistake, name):
    results = run_checks(mistake.make_class(), grading.load_reference(REFERENCES[name]))
    failures = {test: message for test, message in results.items() if message}
    own = [message for test, message in failures.items() if _group(test) == mistake.function]
    assert own, f"{mistake.key} passes every {mistake.function} test"
    phrase = mistake.title if mistake.detect == "output" else mistake.expect
    assert any(phrase in message for message in own), f"no {mistake.function} failure names {phrase!r}:\n" + "\n".join(own)
    assert {_group(test) for test in failures} <= AFFECTS[mistake.function]
    for message in failures.values():  # clean one-paragraph feedback, always about a named function
        assert re.match(r"\w+", message).group(0) in te.FUNCTIONS and "Traceback" not in message


def _stub(name: str):
    """A method called `name` (in tracebacks too) that raises NotImplementedError, like the handout's."""
    def stub(self, *args, **kwargs):
        raise NotImplementedError("TODO")
    return types.FunctionType(stub.__code__.replace(co_name=name), globals(), name)


def test_a_stub_reads_not_implemented_yet():
    stubbed = type("Stub", (EnergyModel,), {name: _stub(name) for name in te.FUNCTIONS})
    results = run_checks(stubbed, grading.load_reference(REFERENCES["public"]))
    assert results and all(message == f"{_group(name)}: not implemented yet" for name, message in results.items())

    only_step_missing = type("NoStep", (EnergyModel,), {"langevin_step": _stub("langevin_step")})
    results = run_checks(only_step_missing, grading.load_reference(REFERENCES["public"]))
    assert results["test_langevin_sample_steps[B2-C3-4x4-steps4]"] is None  # the loop itself is judged with a spy
    chained = [m for name, m in results.items() if name.startswith("test_langevin_sample[")]
    assert chained and all("cannot be checked until langevin_step is implemented" in m for m in chained)


def test_failures_carry_blame_for_the_grader():
    ascent = next(m for m in energy_mistakes.CATALOGUE if m.key == "langevin_step.ascent").make_class()
    case = grading.load_reference(REFERENCES["public"])["cases"]["langevin_sample"][0]
    with pytest.raises(pytest.fail.Exception) as failure:
        te.check_reference(ascent, case)
    assert failure.value.blame == ("langevin_step",)
    assert "matches a known mistake in langevin_step: ascending the energy" in str(failure.value.msg)


def test_messages_say_where_and_how_much():
    class Off(EnergyModel):
        def langevin_step(self, x):
            out = super().langevin_step(x).clone()
            out[1, 0, 2, 3] += 0.5
            return out

    case = grading.load_reference(REFERENCES["public"])["cases"]["langevin_step"][0]
    with pytest.raises(pytest.fail.Exception) as failure:
        te.check_reference(Off, case)
    message = str(failure.value.msg)
    assert message.startswith(f"langevin_step [{case['label']}]: x after the step differs from the reference: "
                              "largest error 0.5")
    assert "example 1, channel 0, pixel (2, 3)" in message


def test_randomness_outside_the_seams_is_explained():
    class Randn(EnergyModel):
        def langevin_step(self, x):
            out = super().langevin_step(x)
            return (out + 0.01 * torch.randn_like(out)).clamp(-1, 1)

    case = grading.load_reference(REFERENCES["public"])["cases"]["langevin_step"][0]
    with pytest.raises(pytest.fail.Exception) as failure:
        te.check_reference(Randn, case)
    assert "draws randomness elsewhere" in str(failure.value.msg)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_the_references_are_reproducible(name):
    """Rebuilding a set gives the stored cases (to the students' tolerance), so they are the solution's."""
    stored = torch.load(REFERENCES[name], weights_only=True)
    assert_fresh(stored, make_reference.build(name, stored["seed"], make_energy_reference.RECIPE),
                 f"python tools/make_energy_reference.py{' --hidden' if name == 'hidden' else ''}")


def test_hidden_differs_from_public():
    public, hidden = (grading.load_reference(REFERENCES[n]) for n in ("public", "hidden"))
    assert public["seed"] != hidden["seed"]
    for function, cases in public["cases"].items():
        public_shapes = {tuple(c["expected"].shape) for c in cases}
        hidden_shapes = {tuple(c["expected"].shape) for c in hidden["cases"][function]}
        assert public_shapes != hidden_shapes or function == "loss"
