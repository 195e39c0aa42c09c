"""Regenerate the reference tensors that test_diffusion.py checks against (instructors only).

    python tools/make_reference.py              # data/reference/public.pt, shipped with the handout
    python tools/make_reference.py --hidden     # tools/reference/hidden.pt, for the autograder only
    python tools/make_reference.py --hidden --seed 7 --out /tmp/hidden.pt   # another hidden set

Each case stores every input (arguments, the stand-in model's weights, the tensors `noise_like`
returns), the solution's output, and the outputs of the common mistakes (tools/mistakes.py) on the same inputs,
so that test_diffusion.py can name a mistake when a student's output equals one of them. The
solution is diffusion.py itself (the code between BEGIN/END SOLUTION). Run on the CPU: the
outputs are then reproducible to float32 rounding, which tests/test_reference.py checks.
The hidden set uses other seeds and shapes, so echoing the public outputs cannot pass it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the solution and the tests live at the root

import grading  # noqa: E402
import test_diffusion as td  # noqa: E402
from diffusion import GaussianDiffusion  # noqa: E402
from tools.mistakes import CATALOGUE  # noqa: E402

FORMAT = 1
OUTPUTS = {"public": ROOT / "data" / "reference" / "public.pt", "hidden": ROOT / "tools" / "reference" / "hidden.pt"}
# A mistake's output is stored for a case only when it is clearly different from the right one there.
DISTINCT = 1e-3


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
    return {
        "id": f"{spec['name']}-B{B}-C{C}-{size}x{size}-T{T}",
        "label": label,
        "config": {"image_size": size, "channels": C, "timesteps": T},
        "model": _stand_in_weights(C, T, generator),
        "args": args,
        "noise_like": draws,
        "noise_like_calls": needed,
    }


def _output(diffusion_class, case: dict):
    """Run a case as test_diffusion.py does; None if it raises."""
    try:
        out = grading.observe(td.observe_case, diffusion_class, case["function"], case)["outputs"][0]
    except pytest.fail.Exception:
        return None
    return out.detach().cpu() if isinstance(out, torch.Tensor) else None


def build(name: str, seed: int | None = None) -> dict:
    """The reference dict for set `name` ("public" or "hidden"); checks it before returning it."""
    if td.DEVICE.type != "cpu":
        raise SystemExit("make_reference: generate on the CPU (unset DIFFUSION_TEST_DEVICE)")
    spec = SETS[name]
    seed = spec["seed"] if seed is None else seed
    reference = {
        "format": FORMAT, "name": name, "seed": seed, "made_with_torch": str(torch.__version__),
        "mistakes": {m.key: {"function": m.function, "title": m.title, "why": m.why, "detect": m.detect}
                     for m in CATALOGUE},
        "cases": {},
    }
    mutants = [(m, m.diffusion_class()) for m in CATALOGUE if m.detect == "output"]
    for k, function in enumerate(td.FUNCTIONS):
        reference["cases"][function] = []
        for i, case_spec in enumerate(spec["cases"].get(function, [])):
            generator = torch.Generator().manual_seed(seed * 1000 + k * 100 + i)
            case = _make_case(function, case_spec, generator)
            case["function"], case["reference"] = function, reference
            if function == "p_losses":  # p_losses is judged on its own: its tests hand it the right x_t
                config = case["config"]
                solution = td.build(GaussianDiffusion, config["channels"], config["image_size"], config["timesteps"])
                case["q_sample_returns"] = solution.q_sample(*case["args"]).detach()
            expected = _output(GaussianDiffusion, case)
            if expected is None:
                raise SystemExit(f"make_reference: the solution fails on {function} [{case['id']}]")
            case["expected"], case["mistakes"] = expected, {}
            for m, mutant in mutants:
                out = _output(mutant, case)
                if out is not None and (out.shape != expected.shape
                                        or (out.double() - expected.double()).abs().max() > DISTINCT):
                    case["mistakes"][m.key] = out
            reference["cases"][function].append(case)
    _check(reference)
    for cases in reference["cases"].values():
        for case in cases:
            del case["function"], case["reference"]
    return reference


def _check(reference: dict) -> None:
    """The solution passes every check; every output mistake is recorded for its own function."""
    failures = {k: v for k, v in grading.run_checks(td, {"diffusion_class": GaussianDiffusion}, reference).items() if v}
    if failures:
        raise SystemExit("make_reference: the solution fails test_diffusion.py:\n" + "\n".join(failures.values()))
    for m in CATALOGUE:
        if m.detect == "output" and not any(m.key in c["mistakes"] for c in reference["cases"][m.function]):
            raise SystemExit(f"make_reference: mistake {m.key} gives the right output on every {m.function} case; "
                             "add a case where it differs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", action="store_true", help="write the hidden (autograder) set instead of the public one")
    parser.add_argument("--seed", type=int, default=None, help="another seed for the inputs (default: the set's own)")
    parser.add_argument("--out", type=Path, default=None, help="output file (default: data/reference/public.pt or "
                                                                  "tools/reference/hidden.pt)")
    args = parser.parse_args(argv)
    name = "hidden" if args.hidden else "public"
    out = args.out or OUTPUTS[name]
    reference = build(name, args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(reference, tmp)
    tmp.replace(out)  # atomic: a crash never leaves half a file
    cases = sum(len(c) for c in reference["cases"].values())
    stored = sum(len(c["mistakes"]) for cs in reference["cases"].values() for c in cs)
    print(f"wrote {out} ({name} set, seed {reference['seed']}): {cases} cases, {stored} stored mistake outputs, "
          f"{out.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
