"""Part 3 in the handout: energy.py stubbed when Part 3 is handed out, left out (with its tests, references,
trainer and README blocks) when it is not. The full self-check (stub fails, solution passes, autograder marks)
runs in `python tools/make_handout.py dist/ --parts 3`; here the build runs without it, to stay fast."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from tools import make_handout

ROOT = Path(__file__).resolve().parent.parent
PART3_FILES = ("energy.py", "energy_trainer.py", "test_energy.py", "data/reference/public_energy.pt")


@pytest.fixture(scope="module")
def handouts(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    built = {}
    for parts in ((1,), (3,), (1, 3)):
        folder = out / "-".join(map(str, parts))
        make_handout.build(ROOT, folder, check=False, parts=parts)
        built[parts] = folder
    return built


def _functions_raising(source: str) -> set[str]:
    """Methods of EnergyModel whose body raises NotImplementedError."""
    tree = ast.parse(source)
    model = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EnergyModel")
    return {f.name for f in model.body if isinstance(f, ast.FunctionDef)
            and any(isinstance(s, ast.Raise) and "NotImplementedError" in ast.unparse(s) for s in f.body)}


@pytest.mark.slow
def test_part_1_alone_leaves_part_3_out(handouts):
    handout = handouts[(1,)] / "handout"
    for name in PART3_FILES:
        assert not (handout / name).exists(), name
    readme = (handout / "README.md").read_text()
    assert "energy" not in readme.lower() and "<!-- part" not in readme
    assert not (handouts[(1,)] / "autograder" / "test_energy.py").exists()


@pytest.mark.slow
@pytest.mark.parametrize("parts", [(3,), (1, 3)])
def test_part_3_ships_a_stub_and_its_tests(handouts, parts):
    handout = handouts[parts] / "handout"
    for name in PART3_FILES:
        assert (handout / name).is_file(), name
    stub = (handout / "energy.py").read_text()
    assert "BEGIN SOLUTION" not in stub and "torch.autograd.grad(energy, x)" not in stub
    assert _functions_raising(stub) == {"langevin_step", "langevin_sample", "loss", "sample_buffer", "update_buffer",
                                        "forward", "sample"}
    assert "TODO (langevin_step)" in stub
    assert "test_energy.py" in (handout / "pytest.ini").read_text()
    readme = (handout / "README.md").read_text()
    assert "## Part 3: energy-based model" in readme and "<!-- part" not in readme
    autograder = handouts[parts] / "autograder"
    assert (autograder / "test_energy.py").is_file() and (autograder / "reference" / "hidden_energy.pt").is_file()
    assert not (handout / "tools").exists() and not list(handout.rglob("*hidden*"))


@pytest.mark.slow
def test_part_3_alone_provides_part_1(handouts):
    diffusion = (handouts[(3,)] / "handout" / "diffusion.py").read_text()
    assert "NotImplementedError" not in diffusion and "BEGIN SOLUTION" not in diffusion
    assert not (handouts[(3,)] / "handout" / "test_diffusion.py").exists()


ASCENT = '''

class EnergyModel(EnergyModel):  # the solution with one mistake: ascending the energy
    def langevin_step(self, x):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.energy(x).sum(), x)
        return (x.detach() + self.step_size * grad + self.noise_scale * self.noise_like(x.shape, x.device)).clamp(-1, 1)
'''


@pytest.mark.slow
def test_the_autograder_grades_part_3(tmp_path):
    """grade.py on energy.py: the solution gets full marks; a wrong langevin_step costs its own points only."""
    from tools.autograder import grade

    def run(text: str) -> dict:
        folder = tmp_path / f"submission{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        (folder / "energy.py").write_text(text)
        results = folder / "results.json"
        assert grade.main(["--submission", str(folder), "--results", str(results), "--parts", "energy"]) == 0
        return {t["name"]: t for t in json.loads(results.read_text())["tests"]}

    solution = (ROOT / "energy.py").read_text()
    full = run(solution)
    assert all(t["score"] == t["max_score"] for t in full.values()) and sum(t["max_score"] for t in full.values()) == 100
    wrong = run(solution + ASCENT)
    assert wrong["Part 3: langevin_step"]["score"] < wrong["Part 3: langevin_step"]["max_score"]
    assert "ascending the energy" in wrong["Part 3: langevin_step"]["output"]
    assert "Not counted here (caused by langevin_step)" in wrong["Part 3: langevin_sample"]["output"]
    assert all(t["score"] == t["max_score"] for name, t in wrong.items() if not name.endswith(("langevin_step",)))
