"""Part 2's recipe for the reference builder (tools/make_reference.py): its cases (instructors only).

    python tools/make_reference_conditional.py           # data/reference/public_conditional.pt (handout)
    python tools/make_reference_conditional.py --hidden  # tools/reference/hidden_conditional.pt (autograder)
    python tools/make_reference_conditional.py --hidden --seed 7 --out /tmp/hidden_conditional.pt

The builder (tools/make_reference.py) runs this recipe; it reuses Part 1's settings and stand-in
weights, and adds what Part 2 needs: labels, the uniform numbers of the
label dropout, and for p_sample the values its guided_noise and threshold spies hand back. Each case
stores every input, the solution's output (ConditionalGaussianDiffusion in diffusion.py) and the
outputs of the mistakes in tools/mistakes_conditional.py on the same inputs. Run on the CPU.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

if not (ROOT / "data" / "reference" / "public_conditional.pt").is_file() and "CONDITIONAL_REFERENCE" not in os.environ:
    # The very first build: test_conditional.py loads its reference at import, so give it an empty one.
    _EMPTY = Path(tempfile.mkdtemp()) / "empty.pt"
    torch.save({"format": 1, "name": "empty", "mistakes": {}, "cases": {}}, _EMPTY)
    os.environ["CONDITIONAL_REFERENCE"] = str(_EMPTY)

import make_reference  # noqa: E402  (Part 1's builder: its settings and stand-in weights)
from mistakes_conditional import CATALOGUE  # noqa: E402

import test_conditional as tc  # noqa: E402
from diffusion import ConditionalGaussianDiffusion, extract  # noqa: E402
from grading import runs_conditional  # noqa: E402


def _case(name, B, C, size, T, K, **extra):
    return dict(name=name, B=B, C=C, size=size, T=T, K=K, **extra)


# Dropout with p = 0.1 and another p (catches a hard-coded 0.1); guidance at w = 0 (the conditional
# model) and w > 0; thresholds on batches that mix images inside and outside [-1, 1], one all
# negative (catches the quantile of x0_hat instead of |x0_hat|), channels of different ranges
# (catches a per-channel s); steps at t_index 0, 1, T-1 and between; T other than 50.
SETS = {
    "public": dict(seed=4321, cases={
        "drop_labels": [_case("p0.1", 10, 3, 4, 50, 3, p=0.1), _case("p0.3", 8, 1, 4, 10, 5, p=0.3),
                        _case("p0.5", 12, 3, 4, 10, 10, p=0.5)],
        "p_losses": [_case("t_mixed", 5, 3, 8, 50, 3, t=[0, 1, 49, 20, 7]), _case("t_mixed", 4, 1, 8, 10, 5, t=[9, 0, 3, 1])],
        "guided_noise": [_case("w0", 3, 3, 8, 50, 3, w=0.0), _case("w0.5", 4, 1, 8, 10, 5, w=0.5),
                         _case("w2", 3, 3, 4, 50, 3, w=2.0), _case("w5", 2, 3, 8, 10, 10, w=5.0)],
        "threshold": [_case("none", 4, 3, 4, 10, 3, method="none"), _case("static", 4, 3, 4, 10, 3, method="static"),
                      _case("dynamic", 4, 3, 4, 10, 3, method="dynamic"),
                      _case("dynamic", 3, 1, 8, 10, 3, method="dynamic")],
        "p_sample": [_case("t_index_0", 3, 3, 8, 50, 3, t_index=0, w=2.0, threshold="dynamic"),
                     _case("t_index_1", 2, 1, 8, 50, 5, t_index=1, w=0.0, threshold="static"),
                     _case("t_index_last", 2, 3, 8, 50, 3, t_index=49, w=5.0, threshold="none"),
                     _case("t_index_mid", 3, 3, 4, 10, 3, t_index=4, w=1.0, threshold="dynamic"),
                     _case("t_index_0", 2, 3, 4, 10, 3, t_index=0, w=0.0, threshold="static")],
        "p_sample_loop": [_case("all_steps", 2, 3, 8, 10, 3, w=2.0, threshold="dynamic"),
                          _case("all_steps", 3, 1, 8, 7, 5, w=0.5, threshold="static")],
        "sample": [_case("end_to_end", 3, 3, 8, 10, 3, w=1.0, threshold="dynamic"),
                   _case("end_to_end", 2, 1, 4, 6, 5, w=3.0, threshold="none")],
    }),
    "hidden": dict(seed=8765, cases={
        "drop_labels": [_case("p0.1", 9, 3, 4, 50, 4, p=0.1), _case("p0.2", 11, 1, 4, 10, 3, p=0.2),
                        _case("p0.6", 7, 3, 4, 10, 6, p=0.6)],
        "p_losses": [_case("t_mixed", 4, 3, 6, 50, 4, t=[49, 1, 0, 25]), _case("t_mixed", 3, 1, 6, 13, 3, t=[12, 2, 0])],
        "guided_noise": [_case("w0", 2, 3, 6, 50, 4, w=0.0), _case("w1.5", 3, 1, 6, 13, 3, w=1.5),
                         _case("w3", 4, 3, 4, 50, 6, w=3.0), _case("w7", 2, 3, 6, 13, 2, w=7.0)],
        "threshold": [_case("none", 3, 3, 6, 10, 3, method="none"), _case("static", 5, 3, 4, 10, 3, method="static"),
                      _case("dynamic", 5, 3, 4, 10, 3, method="dynamic"),
                      _case("dynamic", 2, 1, 6, 10, 3, method="dynamic")],
        "p_sample": [_case("t_index_0", 2, 3, 6, 50, 4, t_index=0, w=3.0, threshold="dynamic"),
                     _case("t_index_1", 3, 1, 6, 50, 3, t_index=1, w=0.0, threshold="static"),
                     _case("t_index_last", 2, 3, 6, 13, 4, t_index=12, w=2.0, threshold="none"),
                     _case("t_index_mid", 2, 3, 4, 50, 2, t_index=30, w=1.5, threshold="dynamic"),
                     _case("t_index_0", 3, 3, 4, 13, 3, t_index=0, w=0.0, threshold="static")],
        "p_sample_loop": [_case("all_steps", 3, 3, 6, 9, 4, w=3.0, threshold="dynamic"),
                          _case("all_steps", 2, 1, 6, 6, 3, w=1.0, threshold="static")],
        "sample": [_case("end_to_end", 2, 3, 6, 9, 4, w=2.0, threshold="dynamic"),
                   _case("end_to_end", 3, 1, 4, 5, 3, w=0.5, threshold="none")],
    }),
}


def _weights(C: int, T: int, K: int, generator: torch.Generator) -> dict:
    weights = make_reference._stand_in_weights(C, T, generator)
    weights["label"] = torch.randn(K + 1, C, generator=generator) * 0.8
    return weights


def _labels(B: int, K: int, generator: torch.Generator, null: bool = True) -> torch.Tensor:
    """Labels in 0..K-1, the first one the null label K when `null` (sampling may ask for it)."""
    y = torch.randint(0, K, (B,), generator=generator)
    if null:
        y[0] = K
    return y


def _x0_hat(spec: dict, generator: torch.Generator) -> torch.Tensor:
    """Predicted images in and out of [-1, 1]: example b scaled by its own factor, channels by theirs,
    the last example shifted to all-negative values."""
    B, C, size = spec["B"], spec["C"], spec["size"]
    x = torch.randn(B, C, size, size, generator=generator)
    scales = torch.tensor([0.3, 1.6, 4.0, 2.5, 0.8])[:B].reshape(B, 1, 1, 1)
    channels = torch.tensor([1.0, 0.5, 1.8])[:C].reshape(1, C, 1, 1)
    x = x * scales * channels
    x[-1] = -(x[-1].abs() + 0.7)
    return x


def _make_case(function: str, spec: dict, generator: torch.Generator) -> dict:
    B, C, size, T, K = spec["B"], spec["C"], spec["size"], spec["T"], spec["K"]
    image = (B, C, size, size)

    def randn():
        return torch.randn(image, generator=generator)

    config = dict(B=B, C=C, size=size, T=T, K=K, p=spec.get("p", 0.1))
    label = f"B={B}, C={C}, {size}x{size}, T={T}, K={K}"
    uniform, draws, extra = [], [], {}
    if function == "drop_labels":
        p = spec["p"]
        y = _labels(B, K, generator, null=False)
        u = torch.rand(B, generator=generator)
        u[0], u[1] = p * 0.5, p + (1 - p) * 0.3  # one dropped, one kept, whatever the draw
        u[(u - p).abs() < 1e-3] += 2e-3  # nothing on the boundary
        args, uniform, label = [y], [u, torch.rand(B, generator=generator)], f"{label}, p_uncond = {p}"
    elif function == "p_losses":
        t = torch.tensor(spec["t"], dtype=torch.long)
        args, label = [torch.rand(image, generator=generator) * 2 - 1, t, randn(), _labels(B, K, generator)], \
            f"{label}, t = {spec['t']}"
    elif function == "guided_noise":
        t = torch.randint(0, T, (B,), generator=generator)
        args, label = [randn(), t, _labels(B, K, generator), spec["w"]], f"{label}, w = {spec['w']}"
    elif function == "threshold":
        args, label = [_x0_hat(spec, generator), spec["method"]], f"{label}, method = {spec['method']!r}"
    elif function == "p_sample":
        t_index = spec["t_index"]
        args = [randn(), torch.full((B,), t_index, dtype=torch.long), t_index, _labels(B, K, generator), spec["w"],
                spec["threshold"]]
        draws = [randn()] if t_index > 0 else []
        label = f"{label}, t_index = {t_index}, w = {spec['w']}, threshold = {spec['threshold']!r}"
        extra["guided_noise_returns"] = torch.tanh(randn()) * 1.3
    elif function == "p_sample_loop":
        args, draws = [randn(), _labels(B, K, generator), spec["w"], spec["threshold"]], [randn() for _ in range(T - 1)]
        label = f"{label}, w = {spec['w']}, threshold = {spec['threshold']!r}"
    else:
        args, draws = [_labels(B, K, generator).tolist(), spec["w"], spec["threshold"]], [randn() for _ in range(T)]
        label = f"{label}, w = {spec['w']}, threshold = {spec['threshold']!r}"
    needed = len(draws)
    draws += [randn(), randn()]  # spares: what an implementation that draws too often gets
    case = {
        "id": f"{spec['name']}-B{B}-C{C}-{size}x{size}-T{T}-K{K}",
        "label": label,
        "config": config,
        "model": _weights(C, T, K, generator),
        "args": args,
        "noise_like": draws,
        "noise_like_calls": needed,
        "uniform_like": uniform,
        **extra,
    }
    solution = runs_conditional.build(ConditionalGaussianDiffusion, config, case["model"])
    if function == "p_losses":  # p_losses is judged on its own: its q_sample spy hands it the right x_t
        case["q_sample_returns"] = solution.q_sample(*args[:3]).detach()
    if function == "p_sample":  # so is p_sample: its spies hand it eps_bar and the thresholded x0_hat
        x, t = args[0], args[1]
        x0_hat = (x - extract(solution.sqrt_one_minus_alphas_cumprod, t, x.shape) * extra["guided_noise_returns"]) \
            / extract(solution.sqrt_alphas_cumprod, t, x.shape)
        case["threshold_takes"] = x0_hat
        case["threshold_returns"] = solution.threshold(x0_hat, spec["threshold"]).detach()
    return case


RECIPE = make_reference.Recipe(
    command="python tools/make_reference_conditional.py", tests=tc, fixture="diffusion_class",
    solution=ConditionalGaussianDiffusion, catalogue=CATALOGUE, sets=SETS,
    make_case=_make_case, outputs={"public": ROOT / "data" / "reference" / "public_conditional.pt",
                                   "hidden": ROOT / "tools" / "reference" / "hidden_conditional.pt"})


if __name__ == "__main__":
    sys.exit(make_reference.main(None, RECIPE))
