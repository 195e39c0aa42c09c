"""test_conditional.py's (Part 2's) checks that are its own: blame, messages, stubs, the guidance call.

That other correct implementations pass and every catalogued mistake fails, named, is checked for every
part alike in tests/test_fairness.py. The checks run in-process through `grading.run_checks`, which calls
the very test functions that pytest runs on students, with the class under test swapped.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from mistakes_conditional import CATALOGUE  # noqa: E402

import grading  # noqa: E402
import test_conditional as tc  # noqa: E402
from diffusion import ConditionalGaussianDiffusion  # noqa: E402
from grading import runs_conditional  # noqa: E402

PUBLIC = ROOT / "data" / "reference" / "public_conditional.pt"


def checks(diffusion_class, reference: dict | None = None) -> dict[str, str | None]:
    return grading.run_checks(tc, {"diffusion_class": diffusion_class},
                              reference or grading.load_reference(PUBLIC))


def test_the_catalogue_is_large():
    assert len(CATALOGUE) >= 15


def _group(test_id: str) -> str:
    name = test_id.split("[")[0][len("test_"):]
    return next(f for f in sorted(tc.FUNCTIONS, key=len, reverse=True) if name == f or name.startswith(f + "_"))


def _stub(name: str):
    """A method called `name` (in tracebacks too) that raises NotImplementedError, like the handout's."""
    def stub(self, *args, **kwargs):
        raise NotImplementedError("TODO")
    return types.FunctionType(stub.__code__.replace(co_name=name), globals(), name)


def test_a_stub_reads_not_implemented_yet():
    stubbed = type("Stub", (ConditionalGaussianDiffusion,), {name: _stub(name) for name in tc.FUNCTIONS})
    results = checks(stubbed)
    assert results and all(message == f"{_group(name)}: not implemented yet" for name, message in results.items()), \
        {k: v for k, v in results.items() if v != f"{_group(k)}: not implemented yet"}


def test_a_wrong_threshold_is_charged_to_threshold_not_to_the_loop():
    records = {r["name"]: r for r in grading.run_tests(
        tc, {"diffusion_class": next(m for m in CATALOGUE if m.key == "threshold.no_divide").make_class()},
        grading.load_reference(PUBLIC))}
    end_to_end = [r for name, r in records.items() if name.startswith(("test_sample[", "test_p_sample_loop["))
                  and r["outcome"] == "failed"]
    assert end_to_end and all(r["blame"] == ["threshold"] for r in end_to_end)
    assert all("fix threshold first" in r["message"] for r in end_to_end)
    # p_sample is judged with spies: a wrong threshold costs it nothing
    assert all(r["outcome"] == "passed" for name, r in records.items() if name.startswith("test_p_sample["))


def test_labels_outside_the_range_reach_the_stand_in_as_a_clear_message():
    class NullMinusOne(ConditionalGaussianDiffusion):
        def guided_noise(self, x, t, y, w):
            null = torch.full_like(y, -1)
            return (1 + w) * self.model(x, t, y) - w * self.model(x, t, null)

    failures = [m for name, m in checks(NullMinusOne).items() if m and name.startswith("test_guided_noise[")]
    assert failures and all("outside 0..K" in m and "null label is K" in m for m in failures)


def test_two_guidance_calls_on_b_pass_but_the_solution_makes_one_on_2b():
    """Two calls are correct (an alternative); the solution itself calls the network once, on 2B."""
    config = dict(B=3, C=3, size=4, T=10, K=3, p=0.1)
    diffusion = runs_conditional.build(ConditionalGaussianDiffusion, config)
    sizes = []
    original = diffusion.model.forward
    diffusion.model.forward = lambda x, t, y=None: (sizes.append(x.shape[0]), original(x, t, y))[1]
    x, t, y = torch.randn(3, 3, 4, 4), torch.tensor([1, 2, 3]), torch.tensor([0, 1, 3])
    diffusion.guided_noise(x, t, y, 2.0)
    assert sizes == [6]
    sizes.clear()
    diffusion.guided_noise(x, t, y, 0.0)
    assert sizes == [3]  # w = 0 needs the conditional prediction only
