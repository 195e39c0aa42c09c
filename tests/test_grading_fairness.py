"""test_diffusion.py's checks that are Part 1's own: blame, messages, stubs, time limits.

That other correct implementations pass and every catalogued mistake fails, named, is checked for every
part alike in tests/test_fairness.py. The checks run in-process through `grading.run_checks`, which calls
the very test functions that pytest runs on students, with the class under test swapped. The real pytest
path (stub and solution in a handout tree) is exercised by tests/test_handout.py, the autograder's sandbox
by tests/test_autograder.py.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import grading
import test_diffusion as td
from diffusion import GaussianDiffusion, extract
from tools.mistakes import CATALOGUE

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = ROOT / "data" / "reference" / "public.pt"


def checks(diffusion_class, reference: dict | None = None) -> dict[str, str | None]:
    return grading.run_checks(td, {"diffusion_class": diffusion_class}, reference or grading.load_reference(PUBLIC))


def _group(test_id: str) -> str:
    name = test_id.split("[")[0][len("test_"):]
    return next(f for f in sorted(td.FUNCTIONS, key=len, reverse=True) if name == f or name.startswith(f + "_"))


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
    case = grading.load_reference(PUBLIC)["cases"]["p_sample_loop"][0]
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

    case = grading.load_reference(PUBLIC)["cases"]["q_sample"][0]
    with pytest.raises(pytest.fail.Exception) as failure:
        td.check_reference(Off, case)
    message = str(failure.value.msg)
    assert message.startswith(f"q_sample [{case['label']}]: x_t differs from the reference: largest error 0.5")
    assert "example 1, channel 0, pixel (2, 3)" in message and "1 of 1152 values are off" in message


def test_the_model_explains_a_wrong_call():
    class FloatT(GaussianDiffusion):
        def p_losses(self, x_0, t, noise):
            return F.l1_loss(self.model(self.q_sample(x_0, t, noise), t.float()), noise)

    case = grading.load_reference(PUBLIC)["cases"]["p_losses"][0]
    with pytest.raises(pytest.fail.Exception) as failure:
        td.check_reference(FloatT, case)
    assert str(failure.value.msg) == ("p_losses: the model was called with t of dtype float32; "
                                      "time steps are integer indexes (torch.long)")


def _records(diffusion_class) -> dict[str, dict]:
    return {r["name"]: r for r in grading.run_tests(td, {"diffusion_class": diffusion_class},
                                                    grading.load_reference(PUBLIC))}


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

    cases = grading.load_reference(PUBLIC)["cases"]["p_sample"]
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
