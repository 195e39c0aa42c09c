"""training_data.py: the demo set, image folders and their cache, augmentation, batches; utils.py's atomic saves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import training_data
import utils
from utils import UserError


def write_image(path: Path, size=(32, 32), colour=(200, 30, 30)) -> None:
    Image.new("RGB", size, colour).save(path)


@pytest.mark.slow
def test_demo_dataset_is_deterministic_varied_uint8_images():
    a = training_data.make_demo_dataset(64, 32, seed=0)
    assert a.shape == (64, 3, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, training_data.make_demo_dataset(64, 32, seed=0))
    assert not torch.equal(a, training_data.make_demo_dataset(64, 32, seed=1))
    # Every image has a shape on a background (several colours), and the images differ.
    colours_per_image = [len(torch.unique(img.flatten(1), dim=1).T) for img in a[:8]]
    assert min(colours_per_image) >= 3
    assert a.float().std(dim=0).mean() > 20
    assert training_data.make_demo_dataset(4, 64).shape == (4, 3, 64, 64)


def test_image_folder_resizes_centre_crops_and_reads_all_formats(tmp_path):
    # 64x32, red | green green | blue: the centre 32x32 crop (after no resize) is all green.
    wide = Image.new("RGB", (64, 32), (0, 200, 0))
    wide.paste((200, 0, 0), (0, 0, 16, 32))
    wide.paste((0, 0, 200), (48, 0, 64, 32))
    wide.save(tmp_path / "a_wide.png")
    write_image(tmp_path / "b.jpg", (96, 96), (10, 20, 230))
    write_image(tmp_path / "c.webp", (16, 16), (240, 240, 10))
    (tmp_path / "notes.txt").write_text("not an image")

    images = training_data.load_image_folder(tmp_path, 32)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.uint8
    green = torch.tensor([0, 200, 0], dtype=torch.float32)
    assert (images[0].float().permute(1, 2, 0) - green).abs().max() <= 2  # the crop kept the centre only
    assert (images[1].float().mean(dim=(1, 2)) - torch.tensor([10.0, 20, 230])).abs().max() < 6  # jpeg, downsized
    assert (images[2].float().mean(dim=(1, 2)) - torch.tensor([240.0, 240, 10])).abs().max() < 6  # webp, upsized


def test_image_folder_cache_is_reused_and_refreshed_when_files_change(tmp_path, monkeypatch):
    for i in range(3):
        write_image(tmp_path / f"{i}.png", colour=(i * 50, 0, 0))
    first = training_data.load_image_folder(tmp_path, 16)
    assert (tmp_path / ".diffusion_cache_16.pt").is_file()

    def no_decoding(*_):
        raise AssertionError("decoded again although the cache is valid")

    with monkeypatch.context() as patch:
        patch.setattr(training_data, "_decode", no_decoding)
        assert torch.equal(training_data.load_image_folder(tmp_path, 16), first)

    write_image(tmp_path / "3.png", colour=(0, 0, 255))  # a new file invalidates the cache
    assert training_data.load_image_folder(tmp_path, 16).shape[0] == 4
    assert training_data.load_image_folder(tmp_path, 8).shape == (4, 3, 8, 8)  # each size has its own cache


def test_missing_and_empty_folders_are_errors_naming_them(tmp_path):
    with pytest.raises(UserError, match="nowhere.*does not exist"):
        training_data.load_image_folder(tmp_path / "nowhere", 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty holds no"):
        training_data.load_image_folder(tmp_path / "empty", 32)
    (tmp_path / "parent" / "cat").mkdir(parents=True)
    with pytest.raises(UserError, match="subfolders cat"):
        training_data.load_image_folder(tmp_path / "parent", 32)


def test_a_few_unreadable_files_warn_many_are_an_error(tmp_path):
    for i in range(20):
        write_image(tmp_path / f"{i:02d}.png")
    (tmp_path / "broken.jpg").write_bytes(b"this is not a jpeg")
    with pytest.warns(UserWarning, match="skipped 1 unreadable file.*broken.jpg"):
        images = training_data.load_image_folder(tmp_path, 32)
    assert images.shape[0] == 20

    bad = tmp_path / "bad"
    bad.mkdir()
    write_image(bad / "good.png")
    (bad / "x.png").write_bytes(b"\x89PNG broken")
    (bad / "y.webp").write_bytes(b"")
    with pytest.raises(UserError, match="2 of 3 images.*x.png, y.webp"):
        training_data.load_image_folder(bad, 32)


def test_augment_flips_about_half_and_scales_to_unit_range():
    image = torch.arange(3 * 4 * 4, dtype=torch.uint8).reshape(1, 3, 4, 4) * 5  # left-right asymmetric
    batch = image.expand(400, -1, -1, -1)
    out = training_data.augment(batch)
    assert out.dtype == torch.float32 and out.shape == batch.shape
    plain, flipped = image.float() / 127.5 - 1, image.flip(-1).float() / 127.5 - 1
    is_plain = (out == plain).flatten(1).all(1)
    is_flipped = (out == flipped).flatten(1).all(1)
    assert bool((is_plain | is_flipped).all())
    assert 120 < int(is_flipped.sum()) < 280
    full = training_data.augment(torch.tensor([0, 255], dtype=torch.uint8).reshape(1, 1, 1, 2))
    assert full.min() == -1 and full.max() == 1


def test_device_batches_visit_every_image_once_per_epoch():
    images = torch.arange(12, dtype=torch.uint8).reshape(12, 1, 1, 1)
    batches = training_data.DeviceBatches(images, batch_size=4)
    epoch = torch.cat([next(batches) for _ in range(3)]).flatten()
    assert sorted(epoch.tolist()) == list(range(12))
    assert next(batches).shape == (4, 1, 1, 1)
    tiny = training_data.DeviceBatches(images[:2], batch_size=5)  # fewer images than a batch: with replacement
    assert next(tiny).shape == (5, 1, 1, 1)


def test_loader_batches_give_whole_batches_across_epochs():
    images = torch.arange(10, dtype=torch.uint8).reshape(10, 1, 1, 1)
    batches = training_data.LoaderBatches(images, batch_size=4, workers=0, device=torch.device("cpu"))
    seen = [next(batches) for _ in range(5)]  # 2 full batches per epoch (drop_last), so this crosses epochs
    assert all(b.shape == (4, 1, 1, 1) and b.dtype == torch.uint8 for b in seen)
    assert len(set(torch.cat(seen[:2]).flatten().tolist())) == 8  # no repeats within an epoch


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    utils.atomic_torch_save({"step": 1}, path)

    def dies_mid_write(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(utils.torch, "save", dies_mid_write)
    with pytest.raises(OSError):
        utils.atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind
