"""`main.py --model ebm` end to end on the CPU with a tiny EnergyNet: train, grids, log.csv energies,
checkpoint and resume (replay buffer included), the non-finite stop keeping the last good checkpoint,
and one-line errors for bad flags."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

import main
from energy import EnergyModel
from energy_trainer import EnergyTrainer
from trainer import Status, TrainConfig

TINY = ["--model", "ebm", "--energy_dim", "4", "--langevin_steps", "2", "--sample_steps", "3", "--buffer_size", "32",
        "--batch_size", "8", "--image_size", "8", "--demo_images", "64", "--num_samples", "4", "--sample_batch_size", "8",
        "--log_every", "1"]


@pytest.fixture(autouse=True)
def hermetic(monkeypatch, one_thread):
    for name in ("WANDB_PROJECT", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)


def run(tmp_path, *flags) -> int:
    return main.main([*TINY, "--save_folder", str(tmp_path), *flags])


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_defaults_are_energy_models_defaults():
    """main.py's --model ebm defaults are EnergyModel's documented ones."""
    signature = inspect.signature(EnergyModel.__init__).parameters
    config = TrainConfig()
    for name in ("step_size", "noise_scale", "langevin_steps", "alpha", "buffer_size", "reinit_prob", "sample_steps"):
        assert getattr(config, name) == signature[name].default, name


def test_trains_writes_grids_energies_and_a_checkpoint(tmp_path, capsys):
    assert run(tmp_path, "--train_steps", "4", "--save_and_sample_every", "2", "--visualize", "--visualize_samples", "2") == 0
    assert "energy-based model: EnergyNet" in capsys.readouterr().out
    for name in ["sample-2.png", "sample-4.png", "buffer-4.png", "denoising-4.png", "denoising-4.gif"]:
        assert (tmp_path / name).is_file(), name
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0] == "step,loss,steps_per_second,fid,energy_real,energy_fake"
    assert len(rows) == 5 and all(math.isfinite(float(v)) for v in rows[-1].split(",")[4:])
    checkpoint = load(tmp_path / "model.pt")
    assert checkpoint["args"]["model"] == "ebm" and checkpoint["step"] == 4
    assert checkpoint["model"]["replay"].shape == (32, 3, 8, 8)


def test_resume_continues_the_replay_buffer(tmp_path):
    assert run(tmp_path, "--train_steps", "3", "--save_and_sample_every", "3") == 0
    saved = load(tmp_path / "model.pt")
    args = main.parse_args([*TINY, "--save_folder", str(tmp_path), "--train_steps", "5",
                            "--load_path", str(tmp_path / "model.pt")])
    trainer = main.build_trainer(args)
    assert isinstance(trainer, EnergyTrainer) and trainer.step == 3
    assert torch.equal(trainer.model.replay.contiguous(), saved["model"]["replay"].contiguous())
    assert trainer.optimizer.param_groups[0]["betas"] == (0.0, 0.999)
    assert trainer.fit().status is Status.DONE and trainer.step == 5
    trainer.close()


def test_nonfinite_energy_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    args = main.parse_args([*TINY, "--save_folder", str(tmp_path), "--train_steps", "2", "--save_and_sample_every", "2"])
    trainer = main.build_trainer(args)
    assert trainer.fit().status is Status.DONE
    good = load(tmp_path / "model.pt")
    with torch.no_grad():
        trainer.model.energy_net.head.bias.fill_(float("inf"))  # every energy becomes infinite
    trainer.config.train_steps = 6
    result = trainer.fit()
    trainer.close()
    assert result.status is Status.NONFINITE and not math.isfinite(result.loss)
    assert result.checkpoint == tmp_path / "model.pt"
    kept = load(tmp_path / "model.pt")
    assert kept["step"] == 2
    assert all(torch.equal(kept["model"][k], good["model"][k]) for k in good["model"])
    main.report(result, [*TINY, "--save_folder", str(tmp_path)], 1)
    assert "the last good checkpoint is" in capsys.readouterr().err


def test_a_diffusion_checkpoint_is_refused_by_name(tmp_path, capsys):
    diffusion = ["--unet_dim", "4", "--unet_dim_mults", "1", "2", "--time_steps", "3", "--batch_size", "8",
                 "--image_size", "8", "--demo_images", "32", "--num_samples", "4", "--log_every", "1"]
    assert main.main([*diffusion, "--save_folder", str(tmp_path), "--train_steps", "1"]) == 0
    capsys.readouterr()
    assert run(tmp_path / "ebm", "--load_path", str(tmp_path / "model.pt"), "--train_steps", "2") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --load_path") and "--model diffusion" in err and "\n" not in err


@pytest.mark.parametrize("flags, words", [
    (["--langevin_steps", "0"], "--langevin_steps must be at least 1"),
    (["--step_size", "0"], "--step_size must be positive"),
    (["--noise_scale", "-1"], "--noise_scale must be 0 or more"),
    (["--alpha", "nan"], "--alpha must be 0 or more"),
    (["--buffer_size", "4"], "--buffer_size 4 must be at least --batch_size 8"),
    (["--reinit_prob", "1.5"], "--reinit_prob must be between 0 and 1"),
    (["--reinit_prob", "nan"], "--reinit_prob must be between 0 and 1"),
    (["--energy_dim", "0"], "--energy_dim must be at least 1"),
    (["--data_path", "/nonexistent/folder"], "--data_path /nonexistent/folder does not exist"),
])
def test_bad_flags_are_one_line_errors(tmp_path, capsys, flags, words):
    assert run(tmp_path, "--train_steps", "1", *flags) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "\n" not in err


@pytest.mark.parametrize("flags, decay", [([], 0.999), (["--ema_decay", "0.9"], 0.9),
                                          (["--model", "diffusion", "--unet_dim", "4"], 0.995)])
def test_the_energy_model_averages_its_weights_longer_unless_told(tmp_path, monkeypatch, flags, decay):
    import trainer as trainer_module

    asked = []
    monkeypatch.setattr(trainer_module, "ema_warmup_decay", lambda chosen, updates: asked.append(chosen) or 0.5)
    trainer = main.build_trainer(main.parse_args([*TINY, "--save_folder", str(tmp_path), *flags]))
    trainer.step = 1000
    trainer.update_ema()
    assert asked == [decay]
