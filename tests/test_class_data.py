"""Part 2's data side in training_data.py: class folders with labels, the demo set's classes, labelled batches,
the class-by-guidance figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import grids
import training_data
from utils import UserError


def write_class(folder: Path, colours: list[tuple[int, int, int]]) -> None:
    folder.mkdir(parents=True)
    for i, colour in enumerate(colours):
        Image.new("RGB", (8, 8), colour).save(folder / f"{i:03d}.png")


@pytest.fixture
def three_classes(tmp_path) -> Path:
    """zebra (2 images), ant (3), moth (1), and what loading must skip: a hidden half-written class, a file."""
    root = tmp_path / "train"
    write_class(root / "zebra", [(250, 0, 0)] * 2)
    write_class(root / "ant", [(0, 250, 0)] * 3)
    write_class(root / "moth", [(0, 0, 250)])
    write_class(root / ".bee.partial", [(9, 9, 9)])
    (root / "prepared.json").write_text("{}")
    return root


def test_class_folders_are_labelled_in_sorted_name_order(three_classes):
    images, labels, names = training_data.load_class_folders(three_classes, 8)
    assert names == ["ant", "moth", "zebra"]
    assert images.shape == (6, 3, 8, 8) and images.dtype == torch.uint8
    assert labels.dtype == torch.long and labels.tolist() == [0, 0, 0, 1, 2, 2]
    # Each image's label is its folder's: ant green, moth blue, zebra red.
    dominant = images.float().mean(dim=(2, 3)).argmax(dim=1)  # 0 red, 1 green, 2 blue
    assert dominant.tolist() == [1, 1, 1, 2, 0, 0]


def test_named_classes_are_a_sorted_subset(three_classes):
    images, labels, names = training_data.load_class_folders(three_classes, 8, classes=["zebra", "ant"])
    assert names == ["ant", "zebra"] and labels.tolist() == [0, 0, 0, 1, 1] and len(images) == 5


@pytest.mark.parametrize("classes, words", [(["zebra", "cat"], ["--classes cat", "ant, moth, zebra"]),
                                            (["bee"], ["--classes bee"])])
def test_an_unknown_class_is_an_error_naming_the_folders(three_classes, classes, words):
    with pytest.raises(UserError) as error:
        training_data.load_class_folders(three_classes, 8, classes=classes)
    for word in words:
        assert word in str(error.value)


def test_a_folder_without_class_folders_is_an_error(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(UserError, match="no class folders"):
        training_data.load_class_folders(tmp_path / "flat", 8)
    with pytest.raises(UserError, match="does not exist"):
        training_data.load_class_folders(tmp_path / "missing", 8)


@pytest.mark.slow
def test_demo_classes_draw_their_shape_and_leave_the_plain_demo_set_unchanged():
    plain = training_data.make_demo_dataset(48, 32, seed=3)
    assert torch.equal(plain, training_data.make_demo_dataset(48, 32, seed=3, labels=None))
    # The same seed draws the same backgrounds, places, sizes and colours: only the shape differs.
    # A square of half-width r covers 4 r^2, a disc pi r^2, a diamond (|dx| + |dy| <= 1.3 r) 3.4 r^2.
    covered = {}
    for k, name in enumerate(training_data.DEMO_CLASSES):
        images = training_data.make_demo_dataset(48, 32, seed=3, labels=torch.full((48,), k))
        background = images[:, :, :1, :1]  # the top-left corner is background in nearly every image
        covered[name] = (images != background).any(dim=1).float().mean(dim=(1, 2))  # [48]
    assert training_data.DEMO_CLASSES == ("circle", "diamond", "square")
    assert (covered["square"] > covered["diamond"]).float().mean() > 0.9
    assert (covered["diamond"] > covered["circle"]).float().mean() > 0.9
    with pytest.raises(ValueError, match="labels"):
        training_data.make_demo_dataset(4, 32, labels=torch.tensor([0, 1, 2, 3]))


def test_labelled_batches_keep_each_image_with_its_label():
    # Image i is filled with the value i, its label is i % 5: a batch must keep the pairs together.
    n = 24
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    labels = torch.arange(n) % 5
    for batches in (training_data.DeviceBatches(images, 8, labels=labels),
                    training_data.LoaderBatches(images, 8, 0, torch.device("cpu"), labels=labels)):
        seen = []
        for _ in range(6):
            x, y = next(batches)
            assert x.shape == (8, 3, 4, 4) and y.shape == (8,) and y.dtype == torch.long
            assert torch.equal(x[:, 0, 0, 0].long() % 5, y)
            seen += x[:, 0, 0, 0].tolist()
        assert set(seen) == set(range(n))  # 6 batches = 2 epochs of 24: every image drawn


def test_guidance_figure_puts_each_class_and_weight_in_its_cell(tmp_path):
    # Cell (w, k) is filled with a colour that names it (red = w, green = k; the labels are grey, so
    # never these colours): the figure must show it at row k, column w of both panels.
    W, K, n, s, scale = 3, 2, 2, 8, 2
    colour = lambda w, k: (40 + 80 * w, 60 + 100 * k, 0)  # noqa: E731
    panel = torch.stack([torch.stack([torch.tensor(colour(w, k)).div(255).view(1, 3, 1, 1).expand(n, 3, s, s)
                                      for k in range(K)]) for w in range(W)])
    path = tmp_path / "guidance.png"
    grids.save_guidance_figure({"static": panel, "dynamic": panel}, ["ant", "zebra"], [0.0, 1.0, 5.0], path, scale=scale)
    figure = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).long()  # [H, W, 3]

    def where(w: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (figure == torch.tensor(colour(w, k))).all(dim=-1).nonzero(as_tuple=True)

    for w in range(W):
        for k in range(K):
            ys, _ = where(w, k)
            assert len(ys) == 2 * n * (s * scale) ** 2, (w, k, len(ys))  # 2 panels x n images x (scale s)^2 pixels
    # Within a panel class 0's cells are above class 1's, and w ascends from left to right.
    ys00, xs00 = where(0, 0)
    ys01, _ = where(0, 1)
    _, xs20 = where(2, 0)
    assert ys00.min() < ys01.min() and xs00.max() < xs20.min()
