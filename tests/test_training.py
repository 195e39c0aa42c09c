"""trainer.py end to end on the CPU with a tiny U-Net: train, checkpoint, resume, sample, visualize,
EMA, NaN stop, interrupted saves, Ctrl-C, the speed flags' fallbacks and wandb offline."""

from __future__ import annotations

import errno
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import main
import trainer as trainer_module
import training_data
import utils
from trainer import FitResult, Status, TrainConfig, Trainer

REPO = Path(__file__).resolve().parent.parent

TINY = ["--unet_dim", "8", "--unet_dim_mults", "1", "2", "--time_steps", "5", "--batch_size", "8",
        "--demo_images", "64", "--num_samples", "4", "--sample_batch_size", "8", "--log_every", "1"]


@pytest.fixture(autouse=True)
def hermetic(monkeypatch):
    """No wandb from the environment; one thread (tiny models, and a shared 2-core CI machine)."""
    for name in ("WANDB_PROJECT", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(tmp_path, *flags) -> int:
    return main.main([*TINY, "--save_folder", str(tmp_path), *flags])


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_train_writes_checkpoints_samples_and_the_denoising_strip(tmp_path, capsys):
    assert run(tmp_path, "--train_steps", "4", "--save_and_sample_every", "2", "--visualize",
               "--visualize_samples", "3") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("No --data_path given: training on the built-in demo set")
    assert "Homework data" in out.splitlines()[0]
    checkpoint = load(tmp_path / "model.pt")
    assert checkpoint["step"] == 4 and checkpoint["args"]["unet_dim"] == 8
    assert set(checkpoint) >= {"model", "ema", "optimizer", "scaler", "rng", "args"}
    for name in ["sample-2.png", "sample-4.png", "denoising-4.png", "denoising-4.gif"]:
        assert (tmp_path / name).is_file(), name
    assert Image.open(tmp_path / "sample-4.png").size == (2 + 2 * 34, 2 + 2 * 34)  # 4 samples as 2x2, padding 2
    gif = Image.open(tmp_path / "denoising-4.gif")
    assert gif.n_frames == 5 + 1  # x_T ... x_0
    strip = Image.open(tmp_path / "denoising-4.png")
    assert strip.size == (2 + 6 * 34, 2 + 3 * 34)  # one row per sample, T + 1 = 6 columns
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0] == "step,loss,steps_per_second,fid" and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]


@pytest.mark.slow
def test_resume_restores_step_weights_optimizer_and_ema(tmp_path, capsys):
    assert run(tmp_path, "--train_steps", "3", "--save_and_sample_every", "3") == 0
    saved = load(tmp_path / "model.pt")
    trainer = main.build_trainer(main.parse_args([*TINY, "--train_steps", "5", "--load_path", str(tmp_path / "model.pt")]))
    assert "resuming from step 3" in capsys.readouterr().out
    assert trainer.step == 3
    for name, value in saved["model"].items():
        assert torch.equal(trainer.model.state_dict()[name], value), name
    for name, value in saved["ema"].items():
        assert torch.equal(trainer.ema.state_dict()[name].cpu(), value), name
    optimizer_state = trainer.optimizer.state_dict()["state"]
    assert optimizer_state[0]["step"] == saved["optimizer"]["state"][0]["step"] == 3
    assert torch.equal(optimizer_state[0]["exp_avg_sq"], saved["optimizer"]["state"][0]["exp_avg_sq"])
    trainer.close()

    assert run(tmp_path, "--train_steps", "5", "--save_and_sample_every", "3", "--load_path",
               str(tmp_path / "model.pt")) == 0
    assert load(tmp_path / "model.pt")["step"] == 5 and (tmp_path / "sample-5.png").is_file()

    (tmp_path / "sample-5.png").unlink()  # already at --train_steps: samples again, trains nothing
    capsys.readouterr()
    assert run(tmp_path, "--train_steps", "5", "--load_path", str(tmp_path / "model.pt")) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert (tmp_path / "sample-5.png").is_file() and load(tmp_path / "model.pt")["step"] == 5


def test_resume_with_another_architecture_is_a_clear_error(tmp_path, capsys):
    assert run(tmp_path, "--train_steps", "1") == 0
    capsys.readouterr()
    code = main.main([*TINY, "--unet_dim", "16", "--save_folder", str(tmp_path), "--load_path", str(tmp_path / "model.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "another architecture" in err[0] and "--unet_dim 8" in err[0]


@pytest.mark.slow
def test_ema_update_follows_the_warm_up_decay_and_samples_come_from_it():
    trainer = main.build_trainer(main.parse_args([*TINY, "--ema_decay", "0.99"]))
    loss = trainer.train_step()
    assert loss.dim() == 0 and not loss.requires_grad and torch.isfinite(loss)
    for ema, model in zip(trainer.ema.module.parameters(), trainer.model.parameters()):
        assert torch.equal(ema, model)  # the first update copies the weights
    before = [p.detach().clone() for p in trainer.ema.module.parameters()]
    trainer.train_step()
    # The second update (step 1) has decay min(0.99, (1 + 1) / (10 + 1)) = 2/11: a fast start.
    for old, ema, new in zip(before, trainer.ema.module.parameters(), trainer.model.parameters()):
        torch.testing.assert_close(ema, 2 / 11 * old + 9 / 11 * new.detach())
    for _ in range(3):
        trainer.train_step()
    with torch.no_grad():  # ruin the trained weights: sampling must not use them
        for p in trainer.model.parameters():
            p.fill_(float("nan"))
    images = trainer.sample(10)
    assert images.shape == (10, 3, 32, 32) and torch.isfinite(images).all()
    assert images.min() >= 0 and images.max() <= 1
    batch = trainer.next_batch()
    assert batch.shape == (8, 3, 32, 32) and batch.min() >= -1 and batch.max() <= 1
    trainer.close()


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    real_step = Trainer.train_step

    def step_then_break_at_3(self):
        loss = real_step(self)
        if self.step == 3:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))
        return loss

    monkeypatch.setattr(Trainer, "train_step", step_then_break_at_3)
    assert run(tmp_path, "--train_steps", "8", "--save_and_sample_every", "2") == 1
    err = capsys.readouterr().err
    assert "NaN" in err and "last good checkpoint" in err and "--learning_rate" in err
    checkpoint = load(tmp_path / "model.pt")
    assert checkpoint["step"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    assert not (tmp_path / "sample-4.png").exists()


def test_a_crash_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    trainer = main.build_trainer(main.parse_args([*TINY, "--save_folder", str(tmp_path)]))
    trainer.train_step()
    trainer.save_checkpoint()
    trainer.train_step()

    def killed_mid_write(obj, f, *args, **kwargs):
        f.write(b"\x80\x02partial")
        raise KeyboardInterrupt  # e.g. the session was killed while writing

    monkeypatch.setattr(utils.torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint()
    monkeypatch.undo()
    assert load(tmp_path / "model.pt")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    trainer.close()


@pytest.mark.slow
def test_ctrl_c_saves_and_prints_the_command_that_resumes(tmp_path, capsys, monkeypatch):
    real_step = Trainer.train_step

    def interrupted_at_step_4(self):
        if self.step == 3:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", interrupted_at_step_4)
    assert run(tmp_path, "--train_steps", "10", "--save_and_sample_every", "100") == 130
    err = capsys.readouterr().err
    assert f"saved {tmp_path / 'model.pt'}" in err
    assert load(tmp_path / "model.pt")["step"] == 3
    command = shlex.split(err.strip().splitlines()[-1])
    assert command[:2] == ["python", "main.py"] and command[-2:] == ["--load_path", str(tmp_path / "model.pt")]

    monkeypatch.undo()
    assert main.main(command[2:] + []) == 0  # the printed command resumes and finishes the run
    assert "resuming from step 3" in capsys.readouterr().out
    assert load(tmp_path / "model.pt")["step"] == 10


@pytest.mark.slow
def test_speed_flags_fall_back_with_warnings_on_the_cpu(tmp_path, monkeypatch):
    def broken_compile(model, **kwargs):
        def fails(*args, **kwargs):
            raise RuntimeError("no compiler for this device")
        return fails

    monkeypatch.setattr(trainer_module.torch, "compile", broken_compile)
    args = main.parse_args([*TINY, "--amp", "fp16", "--compile", "--no-data_on_device", "--no-channels_last",
                            "--save_folder", str(tmp_path)])
    with pytest.warns(UserWarning) as caught:
        trainer = main.build_trainer(args)
        losses = [trainer.train_step() for _ in range(2)]
    messages = " ".join(str(w.message) for w in caught)
    assert "--amp fp16" in messages and "--compile" in messages
    assert trainer.amp_dtype is None and not trainer.scaler.is_enabled()
    assert isinstance(trainer.batches, training_data.LoaderBatches)
    assert all(torch.isfinite(loss) for loss in losses) and trainer.step == 2
    trainer.close()


@pytest.mark.slow
def test_wandb_logs_offline_without_a_login(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert run(tmp_path, "--train_steps", "2", "--save_and_sample_every", "2", "--wandb") == 0
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))


@pytest.mark.slow
def test_trainer_runs_without_the_command_line_and_returns_how_fit_ended(tmp_path, capsys):
    imported = subprocess.run([sys.executable, "-c", "import sys, trainer; print('main' in sys.modules)"],
                              cwd=REPO, capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "False"  # trainer.py never imports main.py
    config = TrainConfig(unet_dim=8, unet_dim_mults=[1, 2], time_steps=5, batch_size=8, demo_images=64,
                         num_samples=4, sample_batch_size=8, log_every=1, train_steps=2, save_folder=str(tmp_path))
    trainer = Trainer(config)
    result = trainer.fit()
    trainer.close()
    assert result == FitResult(Status.DONE, step=2, checkpoint=tmp_path / "model.pt")
    captured = capsys.readouterr()
    assert "main.py" not in captured.out + captured.err


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_previous_file(tmp_path, capsys, monkeypatch):
    real_save = utils.torch.save
    calls = []

    def disk_full_after_the_first(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            f.write(b"\x80\x02partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(utils.torch, "save", disk_full_after_the_first)
    monkeypatch.setattr(utils.time, "sleep", lambda seconds: None)  # the retries' waits
    assert run(tmp_path, "--train_steps", "4", "--save_and_sample_every", "2") == 2
    err = capsys.readouterr().err
    message = err.strip().splitlines()[-1]  # below the progress bar
    assert message.startswith(f"error: cannot write {tmp_path / 'model.pt'}") and "Traceback" not in err, err
    assert "No space left on device" in message and "the checkpoint of step 2 is kept" in message
    assert f"--load_path {tmp_path / 'model.pt'}" in message
    monkeypatch.undo()
    assert load(tmp_path / "model.pt")["step"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_the_start_line_and_the_gif_match_the_run(tmp_path, capsys):
    assert run(tmp_path, "--train_steps", "3", "--visualize", "--visualize_samples", "8") == 0
    out = capsys.readouterr().out
    assert "at the end: checkpoint" in out and "every 1000 steps" not in out
    gif = Image.open(tmp_path / "denoising-3.gif")
    tile = 32 + 2
    assert gif.width >= 384 and gif.height > 2 * tile  # enlarged, and 8 samples in 3 rows, not one strip
    assert abs(gif.width / gif.height - 1) < 0.5
