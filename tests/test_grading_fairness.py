"""test_diffusion.py is fair and strict: other correct implementations pass, every catalogued mistake fails.

The checks run in-process through `grading.run_checks`, which calls the very test functions that
pytest runs on students, with the class under test swapped. The real pytest path (stub and
solution in a handout tree) is exercised by tests/test_handout.py, the autograder's sandbox by
tests/test_autograder.py.
"""

from __future__ import annotations

import re
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import grading
import test_diffusion as td
from diffusion import GaussianDiffusion, extract
from tools.mistakes import ALTERNATIVES, CATALOGUE

ROOT = Path(__file__).resolve().parent.parent

REFERENCES = {"public": ROOT / "data" / "reference" / "public.pt", "hidden": ROOT / "tools" / "reference" / "hidden.pt"}
# The public set in the fast tier; the hidden set, the same checks again, in the slow one.
SETS = [pytest.param(name, marks=pytest.mark.slow) if name == "hidden" else name for name in sorted(REFERENCES)]


class OtherAlgebra(GaussianDiffusion):
    """Plain indexing, p_losses without q_sample, x0-hat as sqrt(1/abar) x - sqrt(1/abar - 1) eps,
    abar_{t-1} with torch.where, noise drawn at every step (times a zero std at the last), keyword calls."""

    def q_sample(self, x_0, t, noise):
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return torch.sqrt(abar) * x_0 + torch.sqrt(1.0 - abar) * noise

    def p_losses(self, x_0, t, noise):
        abar = self.alphas_cumprod[t][:, None, None, None]
        x_t = abar.sqrt() * x_0 + (1 - abar).sqrt() * noise
        return (noise - self.model(x_t, t)).abs().mean()

    def forward(self, x_0, noise=None):
        t = (torch.rand(x_0.shape[0], device=x_0.device) * self.num_timesteps).long()
        noise = noise if noise is not None else self.noise_like(shape=x_0.shape, device=x_0.device)
        return self.p_losses(x_0=x_0, t=t, noise=noise)

    @torch.no_grad()
    def p_sample(self, x, t, t_index):
        eps = self.model(x, t)
        alpha, abar = self.alphas[t][:, None, None, None], self.alphas_cumprod[t][:, None, None, None]
        prev = torch.where(t > 0, self.alphas_cumprod[(t - 1).clamp(min=0)], torch.ones_like(self.alphas_cumprod[t]))
        abar_prev = prev[:, None, None, None]
        x0_hat = (torch.sqrt(1 / abar) * x - torch.sqrt(1 / abar - 1) * eps).clamp(-1, 1)
        beta = 1 - alpha
        mean = (abar_prev.sqrt() * beta * x0_hat + alpha.sqrt() * (1 - abar_prev) * x) / (1 - abar)
        variance = beta * (1 - abar_prev) / (1 - abar)
        return mean + variance.sqrt() * self.noise_like(x.shape, x.device)

    @torch.no_grad()
    def p_sample_loop(self, img):
        steps = [img]
        for t_index in range(self.num_timesteps - 1, -1, -1):
            t = torch.tensor([t_index] * img.shape[0]).to(img.device)  # made on the CPU, then moved
            steps.append(self.p_sample(x=steps[-1], t=t, t_index=t_index))
        return steps[-1]

    @torch.no_grad()
    def sample(self, batch_size):
        img = self.noise_like((batch_size, self.channels, self.image_size, self.image_size), device=self.alphas.device)
        return (self.p_sample_loop(img=img) * 0.5 + 0.5).clamp(0, 1)


class Float64(GaussianDiffusion):
    """Every intermediate in float64, cast back at the end; t drawn on the CPU and moved."""

    def _abar(self, t):
        return self.alphas_cumprod.double().gather(0, t).view(-1, 1, 1, 1)

    def q_sample(self, x_0, t, noise):
        abar = self._abar(t)
        return (abar.sqrt() * x_0.double() + (1 - abar).sqrt() * noise.double()).to(x_0.dtype)

    def p_losses(self, x_0, t, noise):
        return F.l1_loss(self.model(self.q_sample(x_0, t, noise), t).double(), noise.double()).float()

    def forward(self, x_0, noise=None):
        t = torch.randint(0, self.num_timesteps, (x_0.shape[0],)).to(x_0.device)
        if noise is None:
            noise = self.noise_like(x_0.shape, x_0.device)
        return self.p_losses(x_0, t, noise)

    @torch.no_grad()
    def p_sample(self, x, t, t_index):
        eps, xd = self.model(x, t).double(), x.double()
        alpha = self.alphas.double().gather(0, t).view(-1, 1, 1, 1)
        abar = self._abar(t)
        abar_prev = self.alphas_cumprod_prev.double().gather(0, t).view(-1, 1, 1, 1)
        x0_hat = ((xd - (1 - abar).sqrt() * eps) / abar.sqrt()).clamp(-1, 1)
        mean = abar_prev.sqrt() * (1 - alpha) / (1 - abar) * x0_hat + alpha.sqrt() * (1 - abar_prev) / (1 - abar) * xd
        if t_index == 0:
            return mean.to(x.dtype)
        std = ((1 - abar_prev) / (1 - abar) * (1 - alpha)).sqrt()
        return (mean + std * self.noise_like(x.shape, x.device).double()).to(x.dtype)

    @torch.no_grad()
    def p_sample_loop(self, img):
        for t_index in reversed(range(self.num_timesteps)):
            img = self.p_sample(img, torch.full((img.shape[0],), t_index, dtype=torch.long).to(img.device), t_index)
        return img

    @torch.no_grad()
    def sample(self, batch_size):
        shape = (batch_size, self.channels, self.image_size, self.image_size)
        return ((self.p_sample_loop(self.noise_like(shape, self.device)).double() + 1) / 2).float()


class SmallDifferences(GaussianDiffusion):
    """Allowed variations: tqdm around the loop, a numpy loop counter, x_0 clamped again at the end of the
    loop (it is already in [-1, 1]), the noise asked for with keyword arguments."""

    @torch.no_grad()
    def p_sample_loop(self, img):
        from tqdm.auto import tqdm
        for t_index in tqdm(np.arange(self.num_timesteps - 1, -1, -1), disable=True):
            t = torch.full((img.shape[0],), t_index, device=img.device, dtype=torch.long)
            img = self.p_sample(img, t, t_index)
        return img.clamp(-1, 1)

    @torch.no_grad()
    def p_sample(self, x, t, t_index):
        mean = super().p_sample(x, t, 0)
        if t_index == 0:
            return mean
        return mean + extract(self.posterior_variance, t, x.shape).sqrt() * self.noise_like(shape=x.shape, device=x.device)


class OwnBuffers(GaussianDiffusion):
    """Its own schedule tensors precomputed in float32 arithmetic, read with torch.gather; inference_mode."""

    def __init__(self, model, image_size, channels=3, timesteps=50):
        super().__init__(model, image_size, channels, timesteps)
        abar = self.alphas_cumprod
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        self.register_buffer("c_x0", abar_prev.sqrt() * (1 - self.alphas) / (1 - abar))
        self.register_buffer("c_xt", self.alphas.sqrt() * (1 - abar_prev) / (1 - abar))
        self.register_buffer("sigma", ((1 - abar_prev) / (1 - abar) * (1 - self.alphas)).sqrt())

    def _at(self, buffer, t):
        return torch.gather(buffer, 0, t).reshape(-1, 1, 1, 1)

    def q_sample(self, x_0, t, noise):
        abar = self._at(self.alphas_cumprod, t)
        return abar ** 0.5 * x_0 + (1 - abar) ** 0.5 * noise

    def p_losses(self, x_0, t, noise):
        return torch.mean(torch.abs(self.model(self.q_sample(x_0, t, noise), t) - noise))

    def forward(self, x_0, noise=None):
        noise = self.noise_like(x_0.shape, x_0.device) if noise is None else noise
        t = torch.randint(self.num_timesteps, size=(len(x_0),), device=x_0.device, dtype=torch.long)
        return self.p_losses(x_0, t, noise)

    @torch.inference_mode()
    def p_sample(self, x, t, t_index):
        abar = self._at(self.alphas_cumprod, t)
        x0_hat = torch.clamp((x - (1 - abar).sqrt() * self.model(x, t)) / abar.sqrt(), min=-1, max=1)
        mean = self._at(self.c_x0, t) * x0_hat + self._at(self.c_xt, t) * x
        if t_index > 0:
            mean = mean + self._at(self.sigma, t) * self.noise_like(x.shape, x.device)
        return mean

    @torch.inference_mode()
    def p_sample_loop(self, img):
        x = img
        for i in range(self.num_timesteps):
            step = self.num_timesteps - 1 - i
            x = self.p_sample(x, torch.ones(img.shape[0], dtype=torch.long, device=img.device) * step, step)
        return x

    @torch.inference_mode()
    def sample(self, batch_size):
        x = self.p_sample_loop(self.noise_like([batch_size, self.channels, self.image_size, self.image_size], self.device))
        return x.add(1).div(2)


@pytest.fixture(scope="module", params=SETS)
def reference(request):
    return grading.load_reference(REFERENCES[request.param])


def checks(diffusion_class, reference: dict | None = None) -> dict[str, str | None]:
    return grading.run_checks(td, {"diffusion_class": diffusion_class}, reference or grading.load_reference(REFERENCES["public"]))


VARIANTS = [GaussianDiffusion, OtherAlgebra, Float64, OwnBuffers, SmallDifferences] + [
    type(name, (GaussianDiffusion,), dict(methods)) for name, methods in sorted(ALTERNATIVES.items())]


def test_there_are_ten_other_correct_implementations():
    assert len(VARIANTS) - 1 >= 10


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda c: c.__name__)
def test_correct_implementations_pass(variant, reference):
    results = checks(variant, reference)
    assert len(results) >= 30
    failures = {name: message for name, message in results.items() if message}
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


def _group(test_id: str) -> str:
    name = test_id.split("[")[0][len("test_"):]
    return next(f for f in sorted(td.FUNCTIONS, key=len, reverse=True) if name == f or name.startswith(f + "_"))


# Which functions' tests may fail because of a mistake in a given function: its own and the end-to-end
# tests of the functions that call it (test_diffusion.DEPENDS_ON), nothing else.
AFFECTS = {f: {f} | {g for g, deps in td.DEPENDS_ON.items() if f in deps} for f in td.FUNCTIONS}


@pytest.mark.slow  # the whole test file once per catalogued mistake
@pytest.mark.parametrize("mistake", CATALOGUE, ids=lambda m: m.key)
def test_each_mistake_fails_and_is_named(mistake):
    results = checks(mistake.make_class())
    failures = {name: message for name, message in results.items() if message}
    own = [message for name, message in failures.items() if _group(name) == mistake.function]
    assert own, f"{mistake.key} passes every {mistake.function} test"
    phrase = mistake.title if mistake.detect == "output" else mistake.expect
    assert any(phrase in message for message in own), f"no {mistake.function} failure names {phrase!r}:\n" + "\n".join(own)
    assert {_group(name) for name in failures} <= AFFECTS[mistake.function]
    for message in failures.values():  # clean one-paragraph feedback, always about a named function
        assert re.match(r"\w+", message).group(0) in td.FUNCTIONS and "Traceback" not in message


@pytest.mark.slow
def test_each_mistake_fails_the_hidden_set_too():
    hidden = grading.load_reference(REFERENCES["hidden"])
    for mistake in CATALOGUE:
        failures = [m for name, m in checks(mistake.make_class(), hidden).items() if m and _group(name) == mistake.function]
        phrase = mistake.title if mistake.detect == "output" else mistake.expect
        assert any(phrase in m for m in failures), mistake.key


def _stub(name: str):
    """A method called `name` (in tracebacks too) that raises NotImplementedError, like the handout's."""
    def stub(self, *args, **kwargs):
        raise NotImplementedError("TODO")
    return types.FunctionType(stub.__code__.replace(co_name=name), globals(), name)


def test_a_stub_reads_not_implemented_yet():
    stubbed = type("Stub", (GaussianDiffusion,), {name: _stub(name) for name in td.FUNCTIONS})
    results = checks(stubbed)
    assert results and all(message == f"{_group(name)}: not implemented yet" for name, message in results.items())

    # A composite function whose helper is still a stub says so, and blames the helper.
    only_p_sample_missing = type("NoPSample", (GaussianDiffusion,), {"p_sample": _stub("p_sample")})
    results = checks(only_p_sample_missing)
    assert results["test_p_sample_loop_steps[B2-C3-8x8-T50]"] is None  # the loop itself is judged with a spy
    loop = [m for name, m in results.items() if name.startswith("test_p_sample_loop[")]
    assert loop and all("cannot be checked until p_sample is implemented" in m for m in loop)


def test_failures_carry_blame_for_the_grader():
    bad_p_sample = next(m for m in CATALOGUE if m.key == "p_sample.no_clamp").make_class()
    case = grading.load_reference(REFERENCES["public"])["cases"]["p_sample_loop"][0]
    with pytest.raises(pytest.fail.Exception) as failure:
        td.check_reference(bad_p_sample, case)
    assert failure.value.blame == ("p_sample",)
    assert "matches a known mistake in p_sample: x0-hat not clamped" in str(failure.value.msg)


def test_messages_say_where_and_how_much():
    class Off(GaussianDiffusion):
        def q_sample(self, x_0, t, noise):
            x_t = super().q_sample(x_0, t, noise).clone()
            x_t[1, 0, 2, 3] += 0.5
            return x_t

    case = grading.load_reference(REFERENCES["public"])["cases"]["q_sample"][0]
    with pytest.raises(pytest.fail.Exception) as failure:
        td.check_reference(Off, case)
    message = str(failure.value.msg)
    assert message.startswith(f"q_sample [{case['label']}]: x_t differs from the reference: largest error 0.5")
    assert "example 1, channel 0, pixel (2, 3)" in message and "1 of 1152 values are off" in message


def test_the_model_explains_a_wrong_call():
    class FloatT(GaussianDiffusion):
        def p_losses(self, x_0, t, noise):
            return F.l1_loss(self.model(self.q_sample(x_0, t, noise), t.float()), noise)

    case = grading.load_reference(REFERENCES["public"])["cases"]["p_losses"][0]
    with pytest.raises(pytest.fail.Exception) as failure:
        td.check_reference(FloatT, case)
    assert str(failure.value.msg) == ("p_losses: the model was called with t of dtype float32; "
                                      "time steps are integer indexes (torch.long)")


def _records(diffusion_class) -> dict[str, dict]:
    return {r["name"]: r for r in grading.run_tests(td, {"diffusion_class": diffusion_class},
                                                    grading.load_reference(REFERENCES["public"]))}


def _mistake(key: str) -> type:
    return next(m for m in CATALOGUE if m.key == key).make_class()


def test_only_p_sample_wrong_blames_p_sample_not_the_loop():
    records = _records(_mistake("p_sample.no_clamp"))
    end_to_end = [r for name, r in records.items() if name.startswith(("test_sample[", "test_p_sample_loop["))]
    assert end_to_end and all(r["outcome"] == "failed" and r["blame"] == ["p_sample"] for r in end_to_end)
    assert all("fix p_sample first" in r["message"] and "fix p_sample_loop first" not in r["message"] for r in end_to_end)


def test_q_sample_with_alphas_fails_every_reference_case():
    """alpha_0 = abar_0, so a case with t = 0 alone cannot tell them apart: every case has a t > 0."""
    results = checks(_mistake("q_sample.alpha_for_alphabar"))
    reference_tests = [name for name in results if name.startswith("test_q_sample[")]
    assert reference_tests and all(results[name] for name in reference_tests)


def test_a_mistake_is_named_only_where_it_matches_every_stored_case():
    """p_sample with a double square root matches "beta_t as the variance" on some cases, not all."""
    class DoubleSqrt(GaussianDiffusion):
        @torch.no_grad()
        def p_sample(self, x, t, t_index):
            mean = super().p_sample(x, t, 0)
            if t_index == 0:
                return mean
            return mean + extract(self.posterior_variance, t, x.shape).sqrt().sqrt() * self.noise_like(x.shape, x.device)

    cases = grading.load_reference(REFERENCES["public"])["cases"]["p_sample"]
    matches = [grading.close(td.case_outputs(DoubleSqrt, c)["outputs"][0], c["mistakes"]["p_sample.beta_variance"])
               for c in cases if "p_sample.beta_variance" in c["mistakes"]]
    assert any(matches) and not all(matches)  # the situation the rule is for
    failures = [m for name, m in checks(DoubleSqrt).items() if m and name.startswith("test_p_sample[")]
    assert failures and not any("beta_t = 1 - alpha_t used as the variance" in m for m in failures)


def test_an_exception_is_charged_to_the_innermost_function():
    class Crash(GaussianDiffusion):
        @torch.no_grad()
        def p_sample(self, x, t, t_index):
            return self.alphas[self.num_timesteps + 5] * x

    records = _records(Crash)
    for name, record in records.items():
        if name.startswith(("test_p_sample_loop[", "test_sample[")):
            assert record["blame"] == ["p_sample"] and "in p_sample" not in record["message"][:0], record
            assert record["message"].startswith(name.split("[")[0][len("test_"):] + ": p_sample raised IndexError")
        elif name.startswith("test_p_sample["):
            assert record["outcome"] == "failed" and record["message"].startswith("p_sample raised IndexError")
        elif not name.startswith("test_p_sample_on_a_gpu"):
            assert record["outcome"] == "passed", record


@pytest.mark.slow
def test_a_hang_costs_only_its_function_and_says_timed_out(monkeypatch):
    class Hang(GaussianDiffusion):
        @torch.no_grad()
        def p_sample(self, x, t, t_index):
            while True:
                pass

    monkeypatch.setattr(grading, "TIME_LIMIT_S", 0.2)
    records = _records(Hang)
    for name, record in records.items():
        function = _group(name)
        if function == "p_sample":
            assert record["message"].startswith("p_sample: timed out after 0.2 s (an infinite loop?)"), record
        elif name.startswith(("test_p_sample_loop[", "test_sample[")):
            assert record["message"].startswith(f"{function}: timed out after 0.2 s in p_sample"), record
            assert record["blame"] == ["p_sample"]
        else:
            assert record["outcome"] == "passed", record
        assert "tensor(" not in record["message"]  # no input is shown


def test_global_settings_are_restored_after_a_function_changes_them():
    records = _records(_mistake("q_sample.default_dtype"))
    assert torch.get_default_dtype() == torch.float32 and torch.is_grad_enabled()
    assert all(r["outcome"] == "passed" for name, r in records.items() if _group(name) != "q_sample")
