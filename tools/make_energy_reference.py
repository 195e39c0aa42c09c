"""Part 3's recipe for the reference builder (tools/make_reference.py): its cases (instructors only).

    python tools/make_energy_reference.py              # data/reference/public_energy.pt, shipped with the handout
    python tools/make_energy_reference.py --hidden     # tools/reference/hidden_energy.pt, for the autograder only
    python tools/make_energy_reference.py --hidden --seed 7 --out /tmp/hidden_energy.pt   # another hidden set

Each case stores every input (arguments, the stand-in energy's weights, the replay buffer, the
tensors that noise_like / uniform_like / draw_replay return), the solution's output, and the
outputs of the catalogued mistakes (tools/energy_mistakes.py) on the same inputs, so that
test_energy.py can name a mistake when a student's output equals one of them. The solution is
energy.py itself. Run on the CPU: the outputs are then reproducible to float32 rounding.
The hidden set uses other seeds and shapes, so echoing the public outputs cannot pass it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]  # run as a script from anywhere: the solution and tests live at the root

import make_reference  # noqa: E402  (the builder)

import test_energy as te  # noqa: E402
from energy import EnergyModel  # noqa: E402
from tools.energy_mistakes import CATALOGUE  # noqa: E402


def _case(name, B, C, size, **extra):
    return dict(name=name, B=B, C=C, size=size, **extra)


# Step sizes with a large one (the clamp acts), B > 1 everywhere (catches E.mean()), alpha != 1
# (catches a missing alpha), real and fake batches of different sizes, fresh masks with both values.
SETS = {
    "public": dict(seed=4321, cases={
        "langevin_step": [
            _case("small_step", 4, 3, 4, step_size=0.05, noise_scale=0.01),
            _case("medium_step", 3, 1, 8, step_size=0.2, noise_scale=0.1),
            _case("clamped", 2, 3, 6, step_size=1.5, noise_scale=0.3),
        ],
        "langevin_sample": [
            _case("steps_3", 2, 3, 4, step_size=0.1, noise_scale=0.05, steps=3),
            _case("steps_5", 3, 1, 6, step_size=0.3, noise_scale=0.02, steps=5),
            _case("steps_1", 2, 3, 4, step_size=0.2, noise_scale=0.1, steps=1),
        ],
        "loss": [
            _case("alpha_0.1", 4, 3, 4, alpha=0.1, B_fake=4),
            _case("alpha_0.5", 3, 1, 6, alpha=0.5, B_fake=5),
            _case("alpha_0.05", 2, 3, 4, alpha=0.05, B_fake=3),
        ],
        "sample_buffer": [
            _case("some_fresh", 4, 3, 4, buffer_size=10, fresh=[False, True, False, False]),
            _case("mixed", 5, 1, 6, buffer_size=12, fresh=[True, False, False, True, False]),
        ],
        "update_buffer": [
            _case("slots", 3, 3, 4, buffer_size=8),
            _case("slots", 4, 1, 6, buffer_size=9),
        ],
    }),
    "hidden": dict(seed=76543, cases={
        "langevin_step": [
            _case("small_step", 3, 3, 6, step_size=0.08, noise_scale=0.02),
            _case("medium_step", 5, 1, 4, step_size=0.25, noise_scale=0.05),
            _case("clamped", 3, 3, 4, step_size=2.0, noise_scale=0.2),
        ],
        "langevin_sample": [
            _case("steps_4", 3, 3, 4, step_size=0.15, noise_scale=0.03, steps=4),
            _case("steps_2", 2, 1, 8, step_size=0.25, noise_scale=0.05, steps=2),
            _case("steps_6", 2, 3, 4, step_size=0.1, noise_scale=0.1, steps=6),
        ],
        "loss": [
            _case("alpha_0.2", 3, 3, 6, alpha=0.2, B_fake=5),
            _case("alpha_0.3", 5, 1, 4, alpha=0.3, B_fake=2),
            _case("alpha_0.02", 4, 3, 4, alpha=0.02, B_fake=4),
        ],
        "sample_buffer": [
            _case("some_fresh", 5, 3, 4, buffer_size=11, fresh=[False, False, True, False, False]),
            _case("mixed", 3, 1, 8, buffer_size=7, fresh=[True, True, False]),
        ],
        "update_buffer": [
            _case("slots", 4, 3, 6, buffer_size=10),
            _case("slots", 2, 1, 4, buffer_size=6),
        ],
    }),
}


def _stand_in_weights(channels: int, generator: torch.Generator) -> dict:
    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    return {
        "mix": randn(channels, channels) * 0.6,
        "spatial": randn(channels) * 0.4,
        "shift": randn(channels) * 0.5,
        "scale": torch.rand(channels, generator=generator) * 1.5 + 0.5,
        "curvature": torch.rand(channels, generator=generator) * 0.8 + 0.2,
    }


def _make_case(function: str, spec: dict, generator: torch.Generator) -> dict:
    B, C, size = spec["B"], spec["C"], spec["size"]
    shape = (B, C, size, size)

    def uniform(*s):
        return torch.rand(*s, generator=generator) * 2 - 1

    def randn(*s):
        return torch.randn(*s, generator=generator)

    config = dict(image_size=size, channels=C, step_size=spec.get("step_size", 0.1),
                  noise_scale=spec.get("noise_scale", 0.05), langevin_steps=3, alpha=spec.get("alpha", 0.2),
                  buffer_size=spec.get("buffer_size", 8), sample_steps=4)
    replay = uniform(config["buffer_size"], C, size, size)
    noise_like, uniform_like, draws = [], [], []
    label = f"B={B}, C={C}, {size}x{size}"
    if function == "langevin_step":
        args, noise_like = [uniform(*shape)], [randn(*shape)]
        label += f", step_size={config['step_size']}, noise_scale={config['noise_scale']}"
    elif function == "langevin_sample":
        args, noise_like = [uniform(*shape), spec["steps"]], [randn(*shape) for _ in range(spec["steps"])]
        label += f", steps={spec['steps']}, step_size={config['step_size']}, noise_scale={config['noise_scale']}"
    elif function == "loss":
        args = [uniform(*shape), uniform(spec["B_fake"], C, size, size)]
        label += f", {spec['B_fake']} fakes, alpha={config['alpha']}"
    elif function == "sample_buffer":
        idx = torch.randperm(config["buffer_size"], generator=generator)[:B]
        fresh = torch.tensor(spec["fresh"], dtype=torch.bool)
        args, uniform_like, draws = [B], [uniform(*shape)], [(idx, fresh)]
        label += f", buffer_size={config['buffer_size']}, idx={idx.tolist()}, fresh={spec['fresh']}"
    else:  # update_buffer
        idx = torch.randperm(config["buffer_size"], generator=generator)[:B]
        args = [uniform(*shape), idx]
        label += f", buffer_size={config['buffer_size']}, idx={idx.tolist()}"
    needed_noise, needed_uniform = len(noise_like), len(uniform_like)
    noise_like += [randn(*shape), randn(*shape)]  # spares: what an implementation that draws too often gets
    uniform_like += [uniform(*shape), uniform(*shape)]
    return {
        "id": f"{spec['name']}-B{B}-C{C}-{size}x{size}",
        "label": label,
        "config": config,
        "energy": _stand_in_weights(C, generator),
        "replay": replay,
        "args": args,
        "noise_like": noise_like, "noise_like_calls": needed_noise,
        "uniform_like": uniform_like, "uniform_like_calls": needed_uniform,
        "draw_replay": draws,
    }


RECIPE = make_reference.Recipe(
    command="python tools/make_energy_reference.py", tests=te, fixture="model_class", solution=EnergyModel,
    catalogue=CATALOGUE, sets=SETS, make_case=_make_case,
    outputs={"public": ROOT / "data" / "reference" / "public_energy.pt",
             "hidden": ROOT / "tools" / "reference" / "hidden_energy.pt"}, every_function=False)


if __name__ == "__main__":
    sys.exit(make_reference.main(None, RECIPE))
