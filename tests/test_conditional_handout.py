"""make_handout.py --parts: Part 1 alone, Part 2 alone (with Part 1's solution provided), and the leak checks.

Built with --no-check (the self-checks of the default build, both parts, run in tests/test_handout.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "tools" / "autograder")]

import make_handout  # noqa: E402


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    out = {}
    for parts in ((1,), (2,)):
        folder = tmp_path_factory.mktemp("parts" + "".join(map(str, parts)))
        make_handout.build(ROOT, folder, check=False, parts=parts)
        out[parts] = folder
    return out


@pytest.mark.slow
def test_part_1_alone_leaves_part_2_out(builds):
    handout = builds[(1,)] / "handout"
    stub = (handout / "diffusion.py").read_text()
    assert "class GaussianDiffusion" in stub and "ConditionalGaussianDiffusion" not in stub
    assert "Part 2" not in stub and 'raise NotImplementedError("q_sample: not implemented yet")' in stub
    assert not (handout / "test_conditional.py").exists()
    assert not (handout / "data" / "reference" / "public_conditional.pt").exists()
    readme = (handout / "README.md").read_text()
    assert "## Part 2" not in readme and "<!-- part" not in readme
    autograder = builds[(1,)] / "autograder"
    assert not (autograder / "test_conditional.py").exists() and not (autograder / "reference" / "hidden_conditional.pt").exists()
    compile(stub, "diffusion.py", "exec")


@pytest.mark.slow
def test_part_2_alone_provides_part_1s_solution(builds):
    handout = builds[(2,)] / "handout"
    stub = (handout / "diffusion.py").read_text()
    solution = (ROOT / "diffusion.py").read_text()
    part_1 = solution[: solution.index("# Part 2:")]
    provided = part_1.replace("        # BEGIN SOLUTION\n", "").replace("        # END SOLUTION\n", "")
    assert stub.startswith(provided.rstrip("=\n# ")), "Part 1 ships as the solution, markers dropped"
    assert "BEGIN SOLUTION" not in stub and "END SOLUTION" not in stub
    for function in ("drop_labels", "guided_noise", "threshold", "p_sample", "sample"):
        assert f'raise NotImplementedError("{function}: not implemented yet")' in stub
    assert 'raise NotImplementedError("q_sample: not implemented yet")' not in stub
    assert (handout / "test_conditional.py").exists() and not (handout / "test_diffusion.py").exists()
    assert (handout / "data" / "reference" / "public_conditional.pt").exists()
    assert "## Part 2" in (handout / "README.md").read_text()
    autograder = builds[(2,)] / "autograder"
    assert (autograder / "test_conditional.py").exists() and not (autograder / "test_diffusion.py").exists()
    assert (autograder / "reference" / "hidden_conditional.pt").exists()


@pytest.mark.slow
def test_the_stub_of_part_2_runs_part_1(builds):
    """With Part 1 provided, the Part 2 stub imports and Part 1's functions work."""
    namespace: dict = {}
    exec(compile((builds[(2,)] / "handout" / "diffusion.py").read_text(), "diffusion.py", "exec"), namespace)
    import torch

    model = torch.nn.Identity()
    diffusion = namespace["GaussianDiffusion"](model, 4, channels=1, timesteps=5)
    x_0, t = torch.zeros(2, 1, 4, 4), torch.tensor([0, 4])
    assert diffusion.q_sample(x_0, t, torch.ones_like(x_0)).shape == x_0.shape
    conditional = namespace["ConditionalGaussianDiffusion"](model, 4, 3, channels=1, timesteps=5)
    with pytest.raises(NotImplementedError, match="drop_labels: not implemented yet"):
        conditional.drop_labels(torch.tensor([0, 1]))


def test_a_part_2_solution_line_in_a_part_1_handout_is_refused(tmp_path, capsys):
    """Part 2 is left out of a Part 1 handout, and so must its solution be: the leak check covers it."""
    repo = tmp_path / "repo"
    for name in make_handout.repo_files(ROOT):
        if name.split("/")[0] in ("tests", "bench", ".ci") or name.endswith(".ipynb"):
            continue
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes((ROOT / name).read_bytes())
    (repo / "main.py").write_text((repo / "main.py").read_text() + "\n# drop = self.uniform_like(y.shape, y.device) < self.p_uncond\n")
    assert make_handout.main([str(tmp_path / "out"), "--root", str(repo), "--no-check", "--parts", "1"]) == 1
    assert "main.py: `drop = self.uniform_like(y.shape, y.device) < self.p_uncond` (from drop_labels's solution)" \
        in capsys.readouterr().err


def test_unknown_part_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        make_handout.main([str(tmp_path / "out"), "--parts", "4"])
    assert exit_.value.code == 2 and "there is no part 4" in capsys.readouterr().err
