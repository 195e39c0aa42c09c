"""main.py --class_cond end to end on the CPU with a tiny U-Net: labelled data, grids a row per class, a grid
per guidance weight, the class-by-guidance figure, class names in checkpoints, and the one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import main
import training_data

REPO = Path(__file__).resolve().parent.parent
TINY = ["--unet_dim", "8", "--unet_dim_mults", "1", "2", "--time_steps", "4", "--batch_size", "8",
        "--demo_images", "48", "--sample_batch_size", "64", "--log_every", "1"]
# What each class folder of `folders` holds: a colour per class, so a label can be checked against its image.
COLOURS = {"zebra": (230, 20, 20), "ant": (20, 230, 20), "moth": (20, 20, 230)}
COUNTS = {"zebra": 5, "ant": 3, "moth": 4}


# The class folders here are 16x16 and train at 32: the enlargement warning is expected.
pytestmark = pytest.mark.filterwarnings("ignore:--image_size 32 is larger:UserWarning")


@pytest.fixture(autouse=True)
def hermetic(monkeypatch, one_thread):
    for name in ("WANDB_PROJECT", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def folders(tmp_path) -> Path:
    root = tmp_path / "train"
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(COUNTS[name]):
            Image.new("RGB", (16, 16), colour).save(root / name / f"{i}.png")
    return root


def run(folder: Path, *flags: str) -> int:
    return main.main([*TINY, "--save_folder", str(folder), *flags])


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.slow
def test_demo_classes_train_and_write_a_grid_per_weight_and_the_guidance_figure(tmp_path, capsys):
    out = tmp_path / "out"
    assert run(out, "--class_cond", "--train_steps", "2", "--save_and_sample_every", "2", "--num_samples", "6",
               "--guidance", "0", "2", "--threshold", "static", "dynamic", "--visualize", "--visualize_samples", "3") == 0
    printed = capsys.readouterr().out
    assert "label: class (images) 0: circle (16), 1: diamond (16), 2: square (16)" in printed
    checkpoint = load(out / "model.pt")
    assert checkpoint["class_names"] == ["circle", "diamond", "square"] and checkpoint["args"]["class_cond"] is True
    assert checkpoint["args"]["p_uncond"] == 0.1
    for w in ("0", "2"):  # 6 samples over 3 classes: a row of 2 per class, 32x32 images, padding 2
        assert Image.open(out / f"sample-w{w}-2.png").size == (2 + 2 * 34, 2 + 3 * 34)
    assert not (out / "sample-2.png").exists()
    figure = Image.open(out / "guidance-2.png")
    # Two panels (static, dynamic) of 3 class rows, each cell 4 samples of 34 pixels drawn twice as large.
    assert figure.height > 2 * 3 * 2 * 34 and figure.width > 2 * 4 * 2 * 34
    assert Image.open(out / "denoising-2.gif").n_frames == 4 + 1


def test_class_folders_are_labelled_in_sorted_order_and_batches_keep_their_labels(folders, tmp_path, capsys):
    trainer = main.build_trainer(main.parse_args([*TINY, "--class_cond", "--data_path", str(folders),
                                                  "--save_folder", str(tmp_path / "out")]))
    assert "label: class (images) 0: ant (3), 1: moth (4), 2: zebra (5)" in capsys.readouterr().out
    assert trainer.class_names == ["ant", "moth", "zebra"]
    for _ in range(3):
        x_0, y = trainer.next_batch()
        assert x_0.shape == (8, 3, 32, 32) and y.shape == (8,)
        colour = ((x_0.mean(dim=(2, 3)) + 1) * 127.5).round()  # [8, 3] back in 0..255
        expected = torch.tensor([COLOURS[trainer.class_names[k]] for k in y.tolist()], dtype=colour.dtype)
        assert (colour - expected).abs().max() <= 1, (colour, y)
    assert torch.isfinite(trainer.train_step())
    trainer.close()


@pytest.mark.slow
def test_classes_flag_trains_on_a_subset_and_resume_keeps_the_class_names(folders, tmp_path, capsys):
    out = tmp_path / "out"
    flags = ["--class_cond", "--data_path", str(folders), "--classes", "zebra", "ant", "--guidance", "1",
             "--threshold", "static", "--num_samples", "2", "--save_and_sample_every", "2"]
    assert run(out, *flags, "--train_steps", "2") == 0
    assert load(out / "model.pt")["class_names"] == ["ant", "zebra"]
    assert Image.open(out / "sample-w1-2.png").size == (2 + 1 * 34, 2 + 2 * 34)  # a row per class
    capsys.readouterr()
    assert run(out, *flags, "--train_steps", "4", "--load_path", str(out / "model.pt")) == 0
    assert "resuming from step 2" in capsys.readouterr().out
    checkpoint = load(out / "model.pt")
    assert checkpoint["step"] == 4 and checkpoint["class_names"] == ["ant", "zebra"]


@pytest.mark.slow
def test_sample_classes_pick_the_rows(folders, tmp_path):
    out = tmp_path / "out"
    assert run(out, "--class_cond", "--data_path", str(folders), "--train_steps", "1", "--guidance", "0",
               "--threshold", "none", "--num_samples", "3", "--sample_classes", "zebra") == 0
    assert Image.open(out / "sample-w0-1.png").size == (2 + 3 * 34, 2 + 1 * 34)  # one row of 3 zebras


@pytest.mark.slow
def test_guided_samples_depend_on_the_class_and_on_w(tmp_path):
    trainer = main.build_trainer(main.parse_args([*TINY, "--class_cond", "--save_folder", str(tmp_path)]))
    for _ in range(3):
        trainer.train_step()
    y = torch.tensor([0, 1, 2])
    a = trainer.sample_classes(y, 0.0, "none", seed=1)
    assert a.shape == (3, 3, 32, 32)
    assert torch.equal(a, trainer.sample_classes(y, 0.0, "none", seed=1))  # the seed fixes all the noise
    assert not torch.allclose(a, trainer.sample_classes(y, 5.0, "none", seed=1))
    assert not torch.allclose(a[0], trainer.sample_classes(torch.tensor([1, 1, 1]), 0.0, "none", seed=1)[0])
    # Sampling with a seed leaves the training's random stream where it was.
    state = torch.get_rng_state()
    trainer.sample_classes(y, 1.0, "static", seed=1)
    assert torch.equal(state, torch.get_rng_state())
    trainer.close()


@pytest.fixture
def checkpoints(folders, tmp_path) -> dict[str, Path]:
    """A class-conditional checkpoint on `folders` and an unconditional one (both 1 step)."""
    assert run(tmp_path / "cond", "--class_cond", "--data_path", str(folders), "--train_steps", "1",
               "--guidance", "0", "--threshold", "static", "--num_samples", "3") == 0
    assert run(tmp_path / "plain", "--train_steps", "1", "--num_samples", "1") == 0
    return {"cond": tmp_path / "cond" / "model.pt", "plain": tmp_path / "plain" / "model.pt"}


@pytest.mark.slow
def test_sampling_refuses_a_class_the_checkpoint_does_not_know(checkpoints, folders, tmp_path, capsys):
    capsys.readouterr()
    code = run(tmp_path / "again", "--class_cond", "--data_path", str(folders), "--load_path", str(checkpoints["cond"]),
               "--train_steps", "1", "--sample_classes", "zebra", "cat")
    assert code == 2
    message = one_line_error(capsys)
    assert "--sample_classes cat" in message and "checkpoint" in message and "ant, moth, zebra" in message


@pytest.mark.parametrize("which, flags, words", [
    ("plain", ["--class_cond"], ["is an unconditional model", "drop --class_cond"]),
    ("cond", [], ["is class-conditional (ant, moth, zebra)", "add --class_cond"]),
    ("cond", ["--class_cond", "--classes", "ant", "moth"], ["trained on the classes ant, moth, zebra", "ant, moth"]),
])
@pytest.mark.slow
def test_a_checkpoint_loads_only_with_the_same_classes(checkpoints, folders, tmp_path, capsys, which, flags, words):
    capsys.readouterr()
    data = ["--data_path", str(folders)] if "--class_cond" in flags else []
    code = run(tmp_path / "again", *data, *flags, "--load_path", str(checkpoints[which]), "--train_steps", "1")
    assert code == 2
    message = one_line_error(capsys)
    for word in words:
        assert word in message, (word, message)


BAD_INPUT = [
    (["--guidance", "1"], ["--guidance needs --class_cond"]),
    (["--p_uncond", "0.2"], ["--p_uncond needs --class_cond"]),
    (["--sample_classes", "ant"], ["--sample_classes needs --class_cond"]),
    (["--class_cond", "--p_uncond", "1"], ["--p_uncond must be in [0, 1)", "1.0"]),
    (["--class_cond", "--p_uncond", "-0.1"], ["--p_uncond must be in [0, 1)"]),
    (["--class_cond", "--guidance", "-1"], ["--guidance weights must be 0 or more", "-1"]),
    (["--class_cond", "--guidance", "nan"], ["--guidance weights must be 0 or more"]),
    (["--class_cond", "--guidance"], ["--guidance"]),
    (["--class_cond", "--p_uncond", "0"], ["--p_uncond 0", "--guidance 0"]),
    (["--class_cond", "--threshold", "clip"], ["--threshold", "invalid choice", "dynamic"]),
    (["--class_cond", "--classes", "ant"], ["--classes needs --data_path"]),
    (["--class_cond", "--data_path", "{data}", "--classes", "ant", "cat"], ["--classes cat", "ant, moth, zebra"]),
    (["--class_cond", "--data_path", "{data}/ant"], ["--data_path", "no class folders"]),
    (["--class_cond", "--data_path", "{data}/missing"], ["--data_path", "does not exist"]),
    (["--class_cond", "--sample_classes", "square", "cat"], ["--sample_classes cat", "circle, diamond, square"]),
]


@pytest.mark.parametrize("flags, words", BAD_INPUT, ids=[" ".join(f) for f, _ in BAD_INPUT])
def test_bad_input_is_one_line_naming_the_flag(flags, words, folders, tmp_path, capsys):
    flags = [f.replace("{data}", str(folders)) for f in flags]
    assert run(tmp_path / "out", "--train_steps", "1", *flags) == 2
    message = one_line_error(capsys)
    for word in words:
        assert word in message, (word, message)
    assert not (tmp_path / "out" / "model.pt").exists()


@pytest.mark.slow
def test_a_real_process_refusing_a_class_prints_no_traceback(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "main.py", *TINY, "--class_cond", "--sample_classes", "cat",
                             "--train_steps", "0", "--save_folder", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: --sample_classes cat: not one of this model's classes, which are circle, diamond, square"]


def test_demo_classes_are_the_documented_ones():
    # README and --help name them; the demo set draws them (tests/test_class_data.py checks the drawing).
    assert list(training_data.DEMO_CLASSES) == ["circle", "diamond", "square"]
    assert "circle, diamond, square" in " ".join(main.build_parser().format_help().split())
