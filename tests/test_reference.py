"""The committed reference files: reproducible from the solution, complete, and the hidden set really hidden."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import grading
import test_diffusion as td
from diffusion import GaussianDiffusion
from tools import make_reference
from tools.mistakes import CATALOGUE

ROOT = Path(__file__).resolve().parent.parent

COMMITTED = {"public": ROOT / "data" / "reference" / "public.pt", "hidden": ROOT / "tools" / "reference" / "hidden.pt"}


# A mistake is stored for a case when its output differs from the expected one by more than DISTINCT;
# near that line a fresh build on another CPU may store it or not.
BORDERLINE = 2 * make_reference.DISTINCT


def _assert_same(a, b, where: str) -> None:
    """Equal structure, strings, ints and integer tensors; float tensors within the students' tolerance
    (grading.close, relative to the tensor's own scale): CPU kernels (randn's Box-Muller, tanh) round
    differently on each instruction set, and an input such as x0_hat at t = T-1 reaches 1e3. A stale file
    differs by far more (every catalogued mistake differs by DISTINCT)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        if a.dtype.is_floating_point:
            assert grading.close(b, a), f"{where}: differs by {_distance(a, b):.3g}"
        else:
            assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def _distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float("inf") if a.shape != b.shape else (a.double() - b.double()).abs().max().item()


def assert_fresh(old: dict, new: dict, rebuild: str) -> None:
    """`old` (a committed reference) still is what the builder makes: the same cases and inputs, expected
    outputs within the students' tolerance, and every stored mistake still far from the expected output
    and (relative to its own scale: an unclamped chain reaches 1e3) what that mistake computes."""
    assert old["format"] == new["format"] and old["name"] == new["name"]
    _assert_same(old["mistakes"], new["mistakes"], "mistakes")
    assert old["cases"].keys() == new["cases"].keys()
    for function in old["cases"]:
        assert len(old["cases"][function]) == len(new["cases"][function]), (
            f"{function}: the committed {old['name']} reference is stale: run {rebuild}")
        for before, after in zip(old["cases"][function], new["cases"][function]):
            where = f"{old['name']} {function} [{before['id']}]"
            assert before.keys() == after.keys(), where
            _assert_same({k: v for k, v in before.items() if k != "mistakes"},
                         {k: v for k, v in after.items() if k != "mistakes"}, where)
            expected = after["expected"]
            assert grading.close(expected, before["expected"]), f"{where}: the expected output changed: run {rebuild}"
            for key in before["mistakes"].keys() | after["mistakes"].keys():
                stored, fresh = before["mistakes"].get(key), after["mistakes"].get(key)
                if stored is None or fresh is None:  # stored by one build only: only near the line
                    assert _distance(stored if fresh is None else fresh, expected) < BORDERLINE, f"{where}: {key}"
                    continue
                assert _distance(stored, expected) > make_reference.DISTINCT / 2, f"{where}: {key} is not a mistake"
                scale = 1 + stored.double().abs().max().item()
                assert _distance(stored, fresh) <= 1e-3 * scale, f"{where}: {key} is stale: run {rebuild}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_committed_reference_matches_a_fresh_one(name, tmp_path):
    old = torch.load(COMMITTED[name], weights_only=True)  # plain tensors and containers only
    fresh = tmp_path / f"{name}.pt"  # with the committed file's seed: an instructor may pick a new one per term
    options = ["--out", str(fresh), "--seed", str(old["seed"])] + (["--hidden"] if name == "hidden" else [])
    assert make_reference.main(options) == 0
    assert_fresh(old, torch.load(fresh, weights_only=True), "python tools/make_reference.py " + " ".join(options[2:]))


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_cases_cover_what_the_issue_asks(name):
    cases = grading.load_reference(COMMITTED[name])["cases"]
    for function in ("q_sample", "p_losses", "p_sample", "p_sample_loop", "sample"):
        configs = [c["config"] for c in cases[function]]
        assert len(configs) >= 2
        assert {c["channels"] for c in configs} >= {1, 3}, function
        assert len({c["image_size"] for c in configs}) >= 2, function
        assert any(c["timesteps"] != 50 for c in configs), function
    for function in ("q_sample", "p_losses"):
        seen = set()
        for case in cases[function]:
            t, T = case["args"][1], case["config"]["timesteps"]
            seen |= {"0" if v == 0 else "1" if v == 1 else "T-1" if v == T - 1 else "other" for v in t.tolist()}
        assert seen >= {"0", "1", "T-1"}, function
        assert any(len(set(c["args"][1].tolist())) > 1 for c in cases[function]), f"{function}: no batch with mixed t"
    t_indexes = {("0" if c["args"][2] == 0 else "1" if c["args"][2] == 1 else
                  "T-1" if c["args"][2] == c["config"]["timesteps"] - 1 else "mid") for c in cases["p_sample"]}
    assert t_indexes == {"0", "1", "T-1", "mid"}
    # Every output mistake of the catalogue can be recognised on some case of its own function.
    for mistake in CATALOGUE:
        if mistake.detect == "output":
            assert any(mistake.key in c["mistakes"] for c in cases[mistake.function]), mistake.key


def _inputs(case) -> list[torch.Tensor]:
    return [a for a in case["args"] if isinstance(a, torch.Tensor)] + list(case["noise_like"])


def test_hidden_set_shares_no_inputs_with_the_public_one():
    public, hidden = (grading.load_reference(COMMITTED[n]) for n in ("public", "hidden"))
    public_inputs = [x for cases in public["cases"].values() for c in cases for x in _inputs(c) if x.dtype.is_floating_point]
    for cases in hidden["cases"].values():
        for case in cases:
            for x in _inputs(case):
                if x.dtype.is_floating_point:
                    assert not any(x.shape == p.shape and torch.equal(x, p) for p in public_inputs), case["id"]
    shapes = {n: {(f, tuple(c["expected"].shape), c["config"]["timesteps"]) for f, cs in r["cases"].items() for c in cs}
              for n, r in (("public", public), ("hidden", hidden))}
    assert not shapes["public"] & {s for s in shapes["hidden"] if s[1]}  # no (function, shape, T) in common


def test_echoing_the_public_outputs_fails_the_hidden_set():
    """A submission that looks its inputs up in the public file and returns the stored output."""
    public = grading.load_reference(COMMITTED["public"])

    def echo(function):
        def method(self, *args):
            for case in public["cases"][function]:
                if all(not isinstance(a, torch.Tensor) or (a.shape == b.shape and torch.equal(a.cpu(), b))
                       for a, b in zip(args, case["args"])) and case["config"]["timesteps"] == self.num_timesteps:
                    return case["expected"].clone()
            return torch.zeros(())
        return method

    Echo = type("Echo", (GaussianDiffusion,), {f: echo(f) for f in ("q_sample", "p_losses", "p_sample", "p_sample_loop")})
    on_public = grading.run_checks(td, {"diffusion_class": Echo}, public)
    assert all(on_public[name] is None for name in on_public if name.split("[")[0] in ("test_q_sample", "test_p_sample"))
    on_hidden = grading.run_checks(td, {"diffusion_class": Echo}, grading.load_reference(COMMITTED["hidden"]))
    reference_tests = [n for n in on_hidden if n.split("[")[0] in ("test_q_sample", "test_p_losses", "test_p_sample")]
    assert reference_tests and all(on_hidden[n] for n in reference_tests)


HIDDEN_ENVIRONMENT = {"DIFFUSION_REFERENCE": ROOT / "tools" / "reference" / "hidden.pt",
                      "CONDITIONAL_REFERENCE": ROOT / "tools" / "reference" / "hidden_conditional.pt",
                      "ENERGY_REFERENCE": ROOT / "tools" / "reference" / "hidden_energy.pt"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_the_solution_passes_on_the_plainest_cpu_kind(name):
    """The references were made on one CPU; the solution must pass them on any, here torch's portable
    kernels (ATEN_CPU_CAPABILITY=default, no vector instructions), one thread."""
    environment = {k: v for k, v in os.environ.items() if k not in HIDDEN_ENVIRONMENT}
    environment.update(ATEN_CPU_CAPABILITY="default", OMP_NUM_THREADS="1")
    if name == "hidden":
        environment.update({k: str(v) for k, v in HIDDEN_ENVIRONMENT.items()})
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_diffusion.py",
                          "test_conditional.py", "test_energy.py"], cwd=ROOT, env=environment,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    assert re.search(r"\b\d{2,} passed\b", run.stdout) and "failed" not in run.stdout
