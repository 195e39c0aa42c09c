"""main.py's command line: --help, and the bad-input table (one line `error: ...`, exit 2, no traceback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import fid
import main
import training_data

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import make_handout  # noqa: E402 (the handout as students get it)

HOMEWORK_FLAGS = ["--data_path", "--data_class", "--image_size", "--batch_size", "--time_steps", "--unet_dim",
                  "--unet_dim_mults", "--learning_rate", "--train_steps", "--save_and_sample_every", "--save_folder",
                  "--load_path", "--fid", "--visualize", "--dataloader_workers"]
TINY = ["--unet_dim", "8", "--unet_dim_mults", "1", "2", "--time_steps", "5", "--batch_size", "8", "--demo_images", "16"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def files(tmp_path):
    """Things the table's rows point at: a text file, a non-checkpoint .pt, a data folder without a class."""
    (tmp_path / "notes.txt").write_text("hello")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    (tmp_path / "data" / "dog").mkdir(parents=True)
    (tmp_path / "data" / "small").mkdir()
    for i in range(3):  # data prepared at 32x32
        Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(tmp_path / "data" / "small" / f"{i}.png")
    return tmp_path


# (flags, words the one-line message must contain)
BAD_INPUT = [
    (["--time_steps", "0"], ["--time_steps", "at least 1"]),
    (["--batch_size", "0"], ["--batch_size", "at least 1"]),
    (["--batch_size", "-4"], ["--batch_size"]),
    (["--unet_dim_mults", "1", "2", "4", "8", "--image_size", "30"], ["--image_size 30", "multiple of 8", "--image_size 24"]),
    (["--image_size", "18", "--unet_dim_mults", "1", "2", "4"], ["--image_size 18", "multiple of 4", "--image_size 16"]),
    (["--image_size", "4", "--unet_dim_mults", "1", "2", "4", "8"], ["--image_size 4", "multiple of 8", "--image_size 8"]),
    (["--unet_dim_mults"], ["--unet_dim_mults", "e.g. --unet_dim_mults 1 2 4 8"]),
    (["--unet_dim_mults", "1", "0", "2"], ["--unet_dim_mults", "positive"]),
    (["--unet_dim_mults", "1", "-2"], ["--unet_dim_mults", "positive"]),
    (["--learning_rate", "0"], ["--learning_rate", "positive"]),
    (["--learning_rate", "-0.001"], ["--learning_rate", "positive"]),
    (["--learning_rate", "nan"], ["--learning_rate", "positive"]),
    (["--batch_size", "many"], ["--batch_size", "invalid int value"]),
    (["--amp", "fp8"], ["--amp", "invalid choice"]),
    (["--not_a_flag"], ["unrecognized arguments: --not_a_flag"]),
    (["--data_path", "{tmp}/missing"], ["--data_path", "missing does not exist"]),
    (["--data_path", "{tmp}/data"], ["--data_class cat", "dog"]),
    (["--data_path", "{tmp}/data", "--data_class", "dog"], ["--data_path", "dog holds no"]),
    (["--save_folder", "{tmp}/notes.txt/results"], ["--save_folder", "not writable"]),
    (["--load_path", "{tmp}/missing.pt"], ["--load_path", "does not exist"]),
    (["--load_path", "{tmp}/notes.txt"], ["--load_path", "not a checkpoint"]),
    (["--load_path", "{tmp}/other.pt"], ["--load_path", "not a checkpoint written by training"]),
    (["--fid_weights", "{tmp}/missing.pth", "--fid"], ["--fid_weights", "does not exist"]),
    (["--fid", "--fid_samples", "1"], ["--fid_samples", "at least 2"]),
    (["--ema_decay", "1.5"], ["--ema_decay"]),
    (["--device", "cuda"], ["--device cuda", "no CUDA GPU"]),
    (["--device", "tpu"], ["--device tpu", "not a device"]),
    (["--data_path", "{tmp}/notes.txt"], ["--data_path", "notes.txt is a file"]),
    (["--fid", "--fid_weights", "{tmp}/notes.txt"], ["--fid_weights", "not the Inception network's weights"]),
    (["--fid", "--fid_weights", "{tmp}/other.pt"], ["--fid_weights", "not the Inception network's weights"]),
    # The README's --fid command before the data is prepared: the missing data is the first thing to fix.
    (["--data_path", "{tmp}/missing", "--fid", "--fid_weights", "{tmp}/missing.pth"], ["--data_path", "does not exist"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("flags, words", BAD_INPUT, ids=[" ".join(f) for f, _ in BAD_INPUT])
def test_bad_input_is_one_line_naming_the_flag(flags, words, files, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    flags = [f.replace("{tmp}", str(files)) for f in flags]
    save = [] if "--save_folder" in flags else ["--save_folder", str(files / "results")]
    code = main.main([*TINY, "--train_steps", "1", *save, *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    for word in words:
        assert word in err[0], (word, err[0])


def test_fid_without_reachable_weights_fails_at_start_up_in_seconds(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty weights cache
    monkeypatch.setattr(fid, "INCEPTION_URL", (tmp_path / "nowhere" / "inception.pth").as_uri())  # no network
    start = time.perf_counter()
    code = main.main([*TINY, "--fid", "--train_steps", "1000", "--save_folder", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and time.perf_counter() - start < 10
    assert len(err) == 1 and "--fid needs the Inception weights" in err[0] and "--fid_weights" in err[0]
    assert not (tmp_path / "results" / "model.pt").exists()


@pytest.mark.slow
def test_help_documents_every_flag():
    result = subprocess.run([sys.executable, "main.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for flag in HOMEWORK_FLAGS + ["--device", "--seed", "--ema_decay", "--fid_samples", "--wandb", "--amp",
                                 "--channels_last", "--compile", "--data_on_device", "--fused_optimizer"]:
        assert flag in result.stdout, flag


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--time_steps", "0"], ["--data_path", "/no/such/folder"]])
def test_a_real_process_prints_no_traceback(flags, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "main.py", *flags, "--save_folder", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")


STUBBED = ["p_sample_loop", "sample"]


def test_unwritten_functions_are_named_in_one_line(tmp_path, capsys, monkeypatch):
    for name in STUBBED:
        def stub(self, *args, name=name, **kwargs):
            raise NotImplementedError(f"{name}: not implemented yet")
        monkeypatch.setattr(main.GaussianDiffusion, name, stub)
    assert main.unwritten_functions() == STUBBED
    code = main.main([*TINY, "--train_steps", "1", "--save_folder", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "p_sample_loop and sample are not written yet" in err[0] and "pytest test_diffusion.py" in err[0]
    assert not (tmp_path / "results").exists()  # stopped before any start-up work


@pytest.mark.parametrize("parts, flags, part, says", [
    ((1,), [], "diffusion", "diffusion.py: q_sample, p_losses, forward, p_sample, p_sample_loop and sample are not"),
    ((1, 2, 3), [], "diffusion", "diffusion.py: q_sample, p_losses, forward, p_sample, p_sample_loop and sample"),
    ((2,), ["--class_cond"], "conditional", "diffusion.py (Part 2): drop_labels, p_losses, forward, guided_noise, "
                                            "threshold, p_sample, p_sample_loop and sample are not written yet"),
    ((3,), ["--model", "ebm"], "ebm", "energy.py: langevin_step, langevin_sample, loss, sample_buffer, "
                                      "update_buffer, forward and sample are not written yet"),
])
@pytest.mark.slow
def test_the_stub_handout_says_which_functions_to_write_without_a_traceback(tmp_path, parts, flags, part, says):
    """The handout as make_handout builds it (Part 1 alone: without Part 2's class and files)."""
    make_handout.build_handout(REPO, tmp_path, parts)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "main.py", *flags, "--train_steps", "300"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    names = list(main.PART_FUNCTIONS[part][0])
    assert result.stderr.strip() == ("error: " + main.unwritten_message(names, part))
    assert says in result.stderr and "pytest " + main.PART_FUNCTIONS[part][2] in result.stderr


@pytest.mark.slow
def test_a_part_1_handout_says_part_2_is_not_there(tmp_path):
    make_handout.build_handout(REPO, tmp_path, (1,))
    assert not (tmp_path / "conditional_trainer.py").exists() and not (tmp_path / "energy_trainer.py").exists()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for flags, says in ((["--class_cond"], "--class_cond: Part 2"), (["--model", "ebm"], "--model ebm: energy")):
        result = subprocess.run([sys.executable, "main.py", *flags, "--train_steps", "1"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().startswith("error: " + says), result.stderr


def test_ctrl_c_during_start_up_is_one_line(tmp_path, capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(main, "build_trainer", interrupted)
    assert main.main([*TINY, "--save_folder", str(tmp_path)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["interrupted before training started; nothing was saved"]


def test_ctrl_c_at_any_moment_of_a_real_run_prints_no_traceback(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "main.py", *TINY, "--train_steps", "100000", "--save_folder",
                                str(tmp_path)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=env)
    time.sleep(1.5)  # while torch is imported, or the run starts, or it trains: each must end cleanly
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err


def test_training_above_the_prepared_size_warns_that_images_are_enlarged(files):
    with pytest.warns(UserWarning, match=r"--image_size 64 is larger than the images .* \(e\.g\. 32x32\)"):
        images = training_data.load_image_folder(files / "data" / "small", 64)
    assert images.shape == (3, 3, 64, 64)
