"""checkpoints.py on its own, without a Trainer: a written checkpoint loads back state for state, and a
checkpoint of another architecture or other classes is refused with the flags to pass."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.optim.swa_utils import AveragedModel

import checkpoints
from config import TrainConfig
from utils import UserError


def pieces(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    ema = AveragedModel(model, use_buffers=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return model, ema, optimizer, scaler


def trained_checkpoint(config: TrainConfig, class_names=None) -> tuple[dict, torch.nn.Module]:
    model, ema, optimizer, scaler = pieces(0)
    # Adam's state after a step, set by hand: a real first step imports torch._dynamo (seconds).
    for p in model.parameters():
        optimizer.state[p] = {"step": torch.tensor(1.0), "exp_avg": torch.randn_like(p), "exp_avg_sq": torch.rand_like(p)}
    ema.update_parameters(model)
    checkpoint = checkpoints.make_checkpoint(step=7, config=config, world_size=1, model=model, ema=ema,
                                             optimizer=optimizer, scaler=scaler, device=torch.device("cpu"),
                                             class_names=class_names)
    return checkpoint, model


def test_a_written_checkpoint_loads_back_every_state_with_the_learning_rate_given_now(tmp_path):
    config = TrainConfig(unet_dim=8)
    checkpoint, saved_model = trained_checkpoint(config)
    path = tmp_path / "run" / "model.pt"  # a folder that does not exist yet
    checkpoints.write_checkpoint(checkpoint, path)

    loaded = checkpoints.read_checkpoint(path, config, checkpoints.ARCHITECTURE_FIELDS, None)
    model, ema, optimizer, scaler = pieces(1)
    checkpoints.load_states(loaded, path, model=model, ema=ema, optimizer=optimizer, scaler=scaler, learning_rate=5e-4)
    assert loaded["step"] == 7 and loaded["args"] == dataclasses.asdict(config)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved_model.state_dict().values()))
    assert int(ema.n_averaged) == 1
    saved_state, state = checkpoint["optimizer"]["state"], optimizer.state_dict()["state"]
    assert all(torch.equal(saved_state[i][k], state[i][k]) for i in (0, 1) for k in ("step", "exp_avg", "exp_avg_sq"))
    assert optimizer.param_groups[0]["lr"] == 5e-4
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary file behind


@pytest.mark.parametrize("saved, now, words", [
    (TrainConfig(unet_dim=8), TrainConfig(unet_dim=16), "it was trained with --unet_dim 8; pass those flags"),
    (TrainConfig(unet_dim_mults=[1, 2]), TrainConfig(), "it was trained with --unet_dim_mults 1 2; pass those flags"),
])
def test_another_architecture_is_refused_naming_its_flags(tmp_path, saved, now, words):
    checkpoint, _ = trained_checkpoint(saved)
    path = tmp_path / "model.pt"
    checkpoints.write_checkpoint(checkpoint, path)
    with pytest.raises(UserError) as caught:
        checkpoints.read_checkpoint(path, now, checkpoints.ARCHITECTURE_FIELDS, None)
    assert str(caught.value) == f"--load_path {path} holds another architecture: {words} to load it"


@pytest.mark.parametrize("saved, now, words", [
    (None, ["cat", "dog"], "is an unconditional model: drop --class_cond"),
    (["cat", "dog"], None, "is class-conditional (cat, dog): add --class_cond"),
    (["cat", "dog"], ["dog", "cat"], "was trained on the classes cat, dog, but the data gives dog, cat"),
])
def test_other_classes_are_refused(tmp_path, saved, now, words):
    checkpoint, _ = trained_checkpoint(TrainConfig(), class_names=saved)
    path = tmp_path / "model.pt"
    checkpoints.write_checkpoint(checkpoint, path)
    with pytest.raises(UserError) as caught:
        checkpoints.read_checkpoint(path, TrainConfig(), checkpoints.ARCHITECTURE_FIELDS, now)
    assert str(caught.value).startswith(f"--load_path {path} {words}")


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(UserError, match="is not a checkpoint written by training"):
        checkpoints.read_checkpoint(path, TrainConfig(), checkpoints.ARCHITECTURE_FIELDS, None)
    with pytest.raises(UserError, match="does not exist"):
        checkpoints.read_checkpoint(tmp_path / "missing.pt", TrainConfig(), checkpoints.ARCHITECTURE_FIELDS, None)
