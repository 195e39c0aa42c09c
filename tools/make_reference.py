"""Regenerate the reference tensors that a part's test file checks against (instructors only).

    python tools/make_reference.py              # Part 1: data/reference/public.pt, shipped with the handout
    python tools/make_reference.py --hidden     # Part 1: tools/reference/hidden.pt, for the autograder only
    python tools/make_reference.py --hidden --seed 7 --out /tmp/hidden.pt   # another hidden set
    python tools/make_reference.py --part 2     # Part 2 (also: python tools/make_reference_conditional.py)
    python tools/make_reference.py --part 3     # Part 3 (also: python tools/make_energy_reference.py)

One builder for every part, driven by the part's `Recipe`: its test module (whose PART says which
inputs a case holds and how a case runs), its solution class, its mistake catalogue, its sets of
case specs and how to make a case's inputs from a spec. The `recipe` of each part's row in
tools/autograder/parts.py names the module that holds it: Part 1's is below; Part 2's and Part 3's are
in tools/make_reference_conditional.py and tools/make_energy_reference.py.

Each case stores every input (arguments, the stand-in's weights, the tensors the seams return), the
solution's output, and the outputs of the catalogued "output" mistakes on the same inputs, so that the
tests can name a mistake when a student's output equals one of them. The solution is the repository's
own file (the code between BEGIN/END SOLUTION). Run on the CPU; tests/test_reference.py checks that a
fresh build still matches the committed files. The hidden set uses other seeds and shapes, so echoing
the public outputs cannot pass it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]  # run as a script from anywhere: the solution and tests live at the root

import grading  # noqa: E402
import test_diffusion as td  # noqa: E402
from diffusion import GaussianDiffusion  # noqa: E402
from grading import runs_diffusion  # noqa: E402
from tools.autograder.parts import PARTS  # noqa: E402
from tools.mistakes import CATALOGUE  # noqa: E402

FORMAT = 1
# A mistake's output is stored for a case only when it is clearly different from the right one there.
DISTINCT = 1e-3
RECIPES = {part.number: part.recipe for part in PARTS.values() if part.recipe}  # part -> the module of its RECIPE


@dataclass
class Recipe:
    """What a part declares for its reference files."""
    command: str  # how to run this builder for the part, for messages
    tests: ModuleType  # the part's test module: FUNCTIONS, DEVICE and PART (inputs, observe_case)
    fixture: str  # the tests' fixture that holds the class under test
    solution: type
    catalogue: list  # the part's mistakes (tools/mistakes_format.py)
    sets: dict  # "public" / "hidden" -> {"seed": int, "cases": {function: [spec, ...]}}
    make_case: Callable  # (function, spec, torch.Generator) -> a case's inputs, id and label
    outputs: dict  # "public" / "hidden" -> the file it writes by default
    every_function: bool = True  # a (maybe empty) list of cases for every function, not only those with specs


def _output(recipe: Recipe, student_class, case: dict):
    """Run a case as the part's tests do; None if it raises."""
    inputs = {k: case[k] for k in recipe.tests.PART.inputs if k in case}
    try:
        out = grading.observe(recipe.tests.PART.observe_case, student_class, case["function"], inputs)["outputs"][0]
    except pytest.fail.Exception:
        return None
    return out.detach().cpu() if isinstance(out, torch.Tensor) else None


def _distinct(out: torch.Tensor, expected: torch.Tensor) -> bool:
    if out.shape != expected.shape or out.dtype != expected.dtype:
        return True
    return bool((out.double() - expected.double()).abs().max() > DISTINCT)


def build(name: str, seed: int | None = None, recipe: Recipe | None = None) -> dict:
    """The reference dict for set `name` ("public" or "hidden") of a part (default Part 1); checked before
    it is returned."""
    recipe = recipe or RECIPE
    if recipe.tests.DEVICE.type != "cpu":
        raise SystemExit(f"{recipe.command}: generate on the CPU (unset DIFFUSION_TEST_DEVICE / ENERGY_TEST_DEVICE)")
    spec = recipe.sets[name]
    seed = spec["seed"] if seed is None else seed
    reference = {
        "format": FORMAT, "name": name, "seed": seed, "made_with_torch": str(torch.__version__),
        "mistakes": {m.key: {"function": m.function, "title": m.title, "why": m.why, "detect": m.detect}
                     for m in recipe.catalogue},
        "cases": {},
    }
    mutants = [(m, m.make_class()) for m in recipe.catalogue if m.detect == "output"]
    for k, function in enumerate(recipe.tests.FUNCTIONS):
        if function not in spec["cases"] and not recipe.every_function:
            continue
        reference["cases"][function] = []
        for i, case_spec in enumerate(spec["cases"].get(function, [])):
            generator = torch.Generator().manual_seed(seed * 1000 + k * 100 + i)
            case = recipe.make_case(function, case_spec, generator)
            case["function"], case["reference"] = function, reference
            expected = _output(recipe, recipe.solution, case)
            if expected is None:
                raise SystemExit(f"{recipe.command}: the solution fails on {function} [{case['id']}]")
            case["expected"], case["mistakes"] = expected, {}
            for m, mutant in mutants:
                out = _output(recipe, mutant, case)
                if out is not None and _distinct(out, expected):
                    case["mistakes"][m.key] = out
            reference["cases"][function].append(case)
    _check(recipe, reference)
    for cases in reference["cases"].values():
        for case in cases:
            del case["function"], case["reference"]
    return reference


def _check(recipe: Recipe, reference: dict) -> None:
    """The solution passes every check; every output mistake is recorded for its own function."""
    results = grading.run_checks(recipe.tests, {recipe.fixture: recipe.solution}, reference)
    failures = {k: v for k, v in results.items() if v}
    if failures:
        raise SystemExit(f"{recipe.command}: the solution fails {recipe.tests.__name__}.py:\n"
                         + "\n".join(f"{k}: {v}" for k, v in failures.items()))
    for m in recipe.catalogue:
        if m.detect == "output" and not any(m.key in c["mistakes"] for c in reference["cases"].get(m.function, [])):
            raise SystemExit(f"{recipe.command}: mistake {m.key} gives the right output on every {m.function} case; "
                             "add a case where it differs")


def main(argv: list[str] | None = None, recipe: Recipe | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", type=int, choices=sorted(RECIPES), default=None,
                        help="the part whose references to write (default: 1, or this script's own part)")
    parser.add_argument("--hidden", action="store_true", help="write the hidden (autograder) set instead of the public one")
    parser.add_argument("--seed", type=int, default=None, help="another seed for the inputs (default: the set's own)")
    parser.add_argument("--out", type=Path, default=None, help="output file (default: the part's data/reference/public*.pt "
                                                                  "or tools/reference/hidden*.pt)")
    args = parser.parse_args(argv)
    if args.part is not None:
        recipe = importlib.import_module(RECIPES[args.part]).RECIPE
    recipe = recipe or RECIPE
    name = "hidden" if args.hidden else "public"
    out = args.out or recipe.outputs[name]
    reference = build(name, args.seed, recipe)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(reference, tmp)
    tmp.replace(out)  # atomic: a crash never leaves half a file
    cases = sum(len(c) for c in reference["cases"].values())
    stored = sum(len(c["mistakes"]) for cs in reference["cases"].values() for c in cs)
    print(f"wrote {out} ({name} set, seed {reference['seed']}): {cases} cases, {stored} stored mistake outputs, "
          f"{out.stat().st_size / 1024:.0f} KiB")
    return 0


# ----------------------------------------------------------------------------
# The cases. t / t_index chosen to cover 0, 1, T-1 and mixed batches; two or more
# image sizes, channels 1 and 3, and a T other than 50 (catches a hard-coded 50).
# ----------------------------------------------------------------------------

def _case(name, B, C, size, T, **extra):
    return dict(name=name, B=B, C=C, size=size, T=T, **extra)


SETS = {
    "public": dict(seed=1234, cases={
        "q_sample": [
            _case("t_mixed", 6, 3, 8, 50, t=[0, 1, 49, 17, 30, 5]),
            _case("t_0_and_mid", 2, 1, 16, 50, t=[0, 20]),  # t = 0 alone cannot tell alpha from abar (alpha_0 = abar_0)
            _case("t_1", 3, 3, 8, 50, t=[1, 1, 1]),
            _case("t_last", 2, 1, 8, 50, t=[49, 49]),
            _case("t_mixed", 4, 3, 12, 10, t=[9, 0, 4, 1]),
        ],
        "p_losses": [
            _case("t_mixed", 6, 3, 8, 50, t=[3, 49, 0, 1, 22, 40]),
            _case("t_0", 2, 1, 16, 50, t=[0, 0]),
            _case("t_1", 3, 3, 8, 50, t=[1, 1, 1]),
            _case("t_last", 2, 3, 8, 50, t=[49, 49]),
            _case("t_mixed", 4, 1, 12, 10, t=[0, 9, 1, 5]),
        ],
        "p_sample": [
            _case("t_index_0", 3, 3, 8, 50, t_index=0),
            _case("t_index_1", 2, 1, 16, 50, t_index=1),
            _case("t_index_last", 2, 3, 8, 50, t_index=49),
            _case("t_index_mid", 2, 3, 12, 50, t_index=25),
            _case("t_index_last", 3, 1, 8, 10, t_index=9),
            _case("t_index_0", 2, 3, 8, 10, t_index=0),
        ],
        "p_sample_loop": [_case("all_steps", 2, 3, 8, 50), _case("all_steps", 3, 1, 12, 10)],
        "sample": [_case("end_to_end", 2, 3, 8, 50), _case("end_to_end", 2, 1, 12, 10)],
    }),
    "hidden": dict(seed=987654, cases={
        "q_sample": [
            _case("t_mixed", 5, 3, 6, 50, t=[49, 2, 0, 33, 1]),
            _case("t_0_and_mid", 3, 3, 10, 50, t=[0, 0, 25]),
            _case("t_1", 2, 1, 6, 50, t=[1, 1]),
            _case("t_last", 3, 3, 4, 20, t=[19, 19, 19]),
            _case("t_mixed", 7, 1, 10, 13, t=[12, 6, 0, 1, 3, 9, 11]),
        ],
        "p_losses": [
            _case("t_mixed", 5, 3, 10, 50, t=[7, 0, 49, 1, 28]),
            _case("t_0", 3, 1, 6, 50, t=[0, 0, 0]),
            _case("t_1", 2, 3, 4, 20, t=[1, 1]),
            _case("t_last", 4, 1, 10, 50, t=[49, 49, 49, 49]),
            _case("t_mixed", 7, 3, 6, 13, t=[12, 0, 5, 1, 8, 2, 10]),
        ],
        "p_sample": [
            _case("t_index_0", 4, 3, 6, 50, t_index=0),
            _case("t_index_1", 3, 3, 10, 50, t_index=1),
            _case("t_index_last", 3, 1, 6, 50, t_index=49),
            _case("t_index_mid", 2, 3, 10, 20, t_index=11),
            _case("t_index_last", 2, 3, 4, 13, t_index=12),
            _case("t_index_0", 5, 1, 6, 20, t_index=0),
        ],
        "p_sample_loop": [_case("all_steps", 3, 3, 6, 50), _case("all_steps", 2, 1, 10, 13)],
        "sample": [_case("end_to_end", 3, 3, 6, 50), _case("end_to_end", 2, 1, 4, 20)],
    }),
}


# ----------------------------------------------------------------------------
# Building a reference set
# ----------------------------------------------------------------------------

def _stand_in_weights(channels: int, timesteps: int, generator: torch.Generator) -> dict:
    return {
        "mix": torch.randn(channels, channels, generator=generator) * 0.7,
        "spatial": torch.randn(channels, generator=generator) * 0.5,
        "shift": torch.randn(timesteps, channels, generator=generator) * 0.7,
        "gain": torch.rand(timesteps, channels, generator=generator) * 0.8 + 0.6,
    }


def _make_case(function: str, spec: dict, generator: torch.Generator) -> dict:
    B, C, size, T = spec["B"], spec["C"], spec["size"], spec["T"]
    shape = (B, C, size, size)

    def randn():
        return torch.randn(shape, generator=generator)

    x_0 = torch.rand(shape, generator=generator) * 2 - 1
    label = f"B={B}, C={C}, {size}x{size}, T={T}"
    if function in ("q_sample", "p_losses"):
        t = torch.tensor(spec["t"], dtype=torch.long)
        assert t.shape == (B,) and int(t.max()) < T
        args, draws, label = [x_0, t, randn()], [], f"{label}, t = {spec['t']}"
    elif function == "p_sample":
        t_index = spec["t_index"]
        args = [randn(), torch.full((B,), t_index, dtype=torch.long), t_index]
        draws, label = ([randn()] if t_index > 0 else []), f"{label}, t_index = {t_index}"
    elif function == "p_sample_loop":
        args, draws = [randn()], [randn() for _ in range(T - 1)]
    else:
        args, draws = [B], [randn() for _ in range(T)]
    needed = len(draws)
    draws += [randn(), randn()]  # spares: what an implementation that draws too often gets
    case = {
        "id": f"{spec['name']}-B{B}-C{C}-{size}x{size}-T{T}",
        "label": label,
        "config": {"image_size": size, "channels": C, "timesteps": T},
        "model": _stand_in_weights(C, T, generator),
        "args": args,
        "noise_like": draws,
        "noise_like_calls": needed,
    }
    if function == "p_losses":  # p_losses is judged on its own: its tests hand it the right x_t
        solution = runs_diffusion.build(GaussianDiffusion, C, size, T)
        case["q_sample_returns"] = solution.q_sample(*args).detach()
    return case



RECIPE = Recipe(
    command="python tools/make_reference.py", tests=td, fixture="diffusion_class", solution=GaussianDiffusion,
    catalogue=CATALOGUE, sets=SETS, make_case=_make_case,
    outputs={"public": ROOT / "data" / "reference" / "public.pt", "hidden": ROOT / "tools" / "reference" / "hidden.pt"})
OUTPUTS = RECIPE.outputs


if __name__ == "__main__":
    sys.exit(main())
