"""test_energy.py's (Part 3's) checks that are its own: its catalogue, blame, messages, a stub that reads
"not implemented yet", and its references.

That other correct implementations pass and every catalogued mistake fails its own function's tests with
its name is checked for every part alike in tests/test_fairness.py. The checks run in-process through
`grading.run_checks`, which calls the very test functions that pytest runs on students, with the class
under test swapped.
"""

from __future__ import annotations

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


def run_checks(model_class, reference: dict) -> dict:
    return grading.run_checks(te, {"model_class": model_class}, reference)


def _group(test_id: str) -> str:
    name = test_id.split("[")[0][len("test_"):]
    return next(f for f in sorted(te.FUNCTIONS, key=len, reverse=True) if name == f or name.startswith(f + "_"))


def test_the_catalogue_covers_the_issue():
    keys = {m.key for m in energy_mistakes.CATALOGUE}
    assert len(keys) == len(energy_mistakes.CATALOGUE) >= 30
    for wanted in ("langevin_step.weights_not_x", "langevin_step.ascent", "langevin_step.keeps_graph",
                   "langevin_step.no_clamp", "langevin_step.weights_updated", "loss.not_detached",
                   "loss.no_regulariser", "loss.regulariser_sign", "update_buffer.never", "forward.no_update"):
        assert wanted in keys


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
