"""Helpers that more than one of the homework's scripts needs, in the order they depend on each other.

    errors and the command line   UserError, CommandLineParser, run_command_line
    data in                       make_demo_dataset, load_image_folder, load_class_folders (Part 2),
                                  to_model_range, augment, DeviceBatches, LoaderBatches
    images out                    to_uint8, save_grid, save_denoising, save_class_grid and
                                  save_guidance_figure (Part 2)
    FID                           check_fid_installed, make_fid_metric, load_real_statistics, compute_fid
    GPU checks                    check_gpu_supported
    checkpoint files              atomic_torch_save, write_with_retries, WriteFailed
    EMA                           ema_warmup_decay

Images live as uint8 tensors [N, 3, S, S] (S = image_size) from the disk to the training
device, and become float only inside a batch.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import make_grid, save_image
from tqdm.auto import tqdm

# ----------------------------------------------------------------------------------------
# Errors and the command line
# ----------------------------------------------------------------------------------------

class UserError(Exception):
    """A mistake in the command line or the files it names: reported in one line, no traceback."""


class CommandLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake becomes a UserError (one line, exit code 2) instead of usage + exit."""

    def error(self, message: str):
        raise UserError(f"{message} (see python {self.prog} --help)")


def run_command_line(main: Callable[..., int | None], *args) -> int:
    """Run a script's main(*args) and return its exit code: a UserError becomes one line `error: ...`
    on stderr and exit code 2. Every script ends with `sys.exit(run_command_line(main))`."""
    try:
        return main(*args) or 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


# ----------------------------------------------------------------------------------------
# Data in
# ----------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
CACHE_VERSION = 1

# Saturated colours for the shapes, so that every image has a clear subject.
_PALETTE = torch.tensor(
    [[0.95, 0.20, 0.15], [0.15, 0.75, 0.25], [0.20, 0.35, 0.95], [0.98, 0.85, 0.10],
     [0.10, 0.85, 0.90], [0.90, 0.20, 0.85], [1.00, 0.55, 0.05], [0.97, 0.97, 0.97]]
)


# The demo set's classes (Part 2, --class_cond): label k draws both shapes of an image as DEMO_CLASSES[k].
DEMO_CLASSES = ("circle", "diamond", "square")
_DEMO_SHAPE = torch.tensor([0, 2, 1])  # label -> the shape index below (0 circle, 1 square, 2 diamond)


def make_demo_dataset(num_images: int = 4096, image_size: int = 32, seed: int = 0,
                      labels: torch.Tensor | None = None) -> torch.Tensor:
    """The built-in demo set: soft-edged circles, squares and diamonds on plain backgrounds.

    Deterministic (its own generator seeded with `seed`) and vectorised, so it is made in a
    fraction of a second instead of being downloaded. Two shapes per image, the second on top.

    Args:
        labels: [num_images] long in 0..2, or None. With labels, both shapes of image i are
            DEMO_CLASSES[labels[i]]; everything else (places, sizes, colours) is as without.
    Returns:
        [num_images, 3, image_size, image_size] uint8.
    """
    if labels is not None and (labels.shape != (num_images,) or labels.min() < 0 or labels.max() >= len(DEMO_CLASSES)):
        raise ValueError(f"labels must be [num_images] in 0..{len(DEMO_CLASSES) - 1}, got {tuple(labels.shape)} "
                         f"in {labels.min().item()}..{labels.max().item()}")
    g = torch.Generator().manual_seed(seed)
    n, s = num_images, image_size
    coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s  # pixel centres in (0, 1)
    y, x = coords.view(1, s, 1), coords.view(1, 1, s)
    images = (0.1 + 0.4 * torch.rand(n, 3, 1, 1, generator=g)).expand(n, 3, s, s).clone()
    for _ in range(2):
        cx, cy = (0.2 + 0.6 * torch.rand(2, n, 1, 1, generator=g)).unbind(0)
        radius = 0.12 + 0.18 * torch.rand(n, 1, 1, generator=g)
        dx, dy = (x - cx).abs(), (y - cy).abs()
        # Distance to the centre in units of the radius, under three norms: <= 1 is inside.
        dist = torch.stack([torch.sqrt(dx**2 + dy**2), torch.maximum(dx, dy), (dx + dy) / 1.3]) / radius
        kind = torch.randint(0, 3, (n,), generator=g)  # drawn even with labels: the same stream either way
        if labels is not None:
            kind = _DEMO_SHAPE[labels]
        dist = dist[kind, torch.arange(n)]  # [N, S, S]
        # About one pixel of anti-aliasing at the edge: the same shape at any image size.
        alpha = ((1 - dist) * radius * s).clamp(0, 1).unsqueeze(1)
        colour = _PALETTE[torch.randint(0, len(_PALETTE), (n,), generator=g)]
        colour = (colour + 0.1 * torch.randn(n, 3, generator=g)).clamp(0, 1)
        images = images * (1 - alpha) + colour[:, :, None, None] * alpha
    return (images * 255).round().to(torch.uint8)


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside `folder` (not its subfolders), sorted by name."""
    return sorted(
        p for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def _decode(path: Path, image_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """One file -> ([3, S, S] uint8, its original (height, width)): shorter side resized to S, centre crop."""
    image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    if image.dtype != torch.uint8:  # 16-bit PNGs
        image = TF.to_dtype(image, torch.uint8, scale=True)
    original = tuple(image.shape[-2:])
    if tuple(image.shape[-2:]) != (image_size, image_size):
        image = TF.resize(image, [image_size], antialias=True)
        image = TF.center_crop(image, [image_size, image_size])
    return image, original


def _names(paths: list[Path], limit: int = 5) -> str:
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def load_image_folder(folder: str | Path, image_size: int, max_unreadable_fraction: float = 0.1) -> torch.Tensor:
    """Decode every jpg/png/webp in `folder` once and cache the result beside the data.

    The cache `folder/.diffusion_cache_<S>.pt` holds the uint8 tensor and the names and sizes
    of the files it was made from; it is reused while those match, so later runs (and every
    epoch) cost no decoding. A folder we cannot write to (e.g. a read-only Kaggle input) just
    goes uncached, with a warning.

    Unreadable files: a few (at most `max_unreadable_fraction` of them) are skipped with a
    warning naming them; more than that is an error naming them.

    Returns:
        [N, 3, image_size, image_size] uint8.
    Raises:
        UserError: the folder is missing, holds no images, or too many are unreadable.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"image folder {folder} does not exist")
    files = list_images(folder)
    if not files:
        subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        hint = f" (it has the subfolders {', '.join(subfolders[:5])}: one of them may be the class you want)" if subfolders else ""
        raise UserError(f"image folder {folder} holds no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} files{hint}")

    cache = folder / f".diffusion_cache_{image_size}.pt"
    fingerprint = [(p.name, p.stat().st_size) for p in files]
    if cache.is_file():
        try:
            saved = torch.load(cache, map_location="cpu", weights_only=True)
            if saved.get("version") == CACHE_VERSION and [tuple(f) for f in saved["files"]] == fingerprint:
                if saved["skipped"]:
                    warnings.warn(f"{folder}: skipped {len(saved['skipped'])} unreadable file(s): {', '.join(saved['skipped'][:5])}")
                return saved["images"]
        except Exception:  # noqa: BLE001 a stale or damaged cache is rebuilt, never fatal
            pass

    images, unreadable, enlarged = [], [], []
    for path in tqdm(files, desc=f"decoding {folder}", unit="img", leave=False, disable=len(files) < 500):
        try:
            image, (h, w) = _decode(path, image_size)
        except Exception:  # noqa: BLE001 (torchvision raises RuntimeError, OSError or ValueError)
            unreadable.append(path)
            continue
        images.append(image)
        if min(h, w) < image_size:
            enlarged.append((w, h))
    if len(enlarged) > len(images) // 2:  # enlarged images look blurry: say so rather than train on them silently
        w, h = enlarged[0]
        warnings.warn(f"--image_size {image_size} is larger than the images in {folder} (e.g. {w}x{h}), so they are "
                      f"enlarged and blurry: train at their size or prepare the data at --image_size {image_size}")
    if unreadable:
        if not images or len(unreadable) > max_unreadable_fraction * len(files):
            raise UserError(f"{len(unreadable)} of {len(files)} images in {folder} cannot be read: {_names(unreadable)}; "
                            "remove or re-save them")
        warnings.warn(f"{folder}: skipped {len(unreadable)} unreadable file(s): {_names(unreadable)}")
    result = torch.stack(images)
    try:
        atomic_torch_save({"version": CACHE_VERSION, "files": fingerprint, "skipped": [p.name for p in unreadable],
                           "images": result}, cache)
    except OSError as error:
        warnings.warn(f"cannot write the image cache {cache} ({error.strerror}); images will be decoded again next run")
    return result


def list_class_folders(data_path: Path) -> list[str]:
    """The class folders directly inside `data_path`, sorted; hidden ones (a half-written .x.partial) skipped."""
    return sorted(p.name for p in Path(data_path).iterdir() if p.is_dir() and not p.name.startswith("."))


def load_class_folders(data_path: str | Path, image_size: int, classes: list[str] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every class folder under `data_path` (or the named `classes`), one label per folder, in sorted name order.

    Returns:
        images [N, 3, S, S] uint8 (through load_image_folder's cache), labels [N] long in 0..K-1,
        class_names: K folder names, label i = class_names[i].
    Raises:
        UserError: no such folder, no class folders, a named class missing, a folder without images.
    """
    data_path = Path(data_path)
    if not data_path.is_dir():
        raise UserError(f"--data_path {data_path} does not exist: pass the folder that holds one folder per class")
    found = list_class_folders(data_path)
    if classes:
        missing = [c for c in dict.fromkeys(classes) if c not in found]
        if missing:
            has = f"it has {', '.join(found)}" if found else "it has no class folders"
            raise UserError(f"--classes {' '.join(missing)}: no such folder in {data_path} ({has})")
    names = sorted(set(classes)) if classes else found
    if not names:
        raise UserError(f"--data_path {data_path} has no class folders: --class_cond reads data_path/<class>/ images")
    images = [load_image_folder(data_path / name, image_size) for name in names]
    labels = torch.cat([torch.full((len(x),), k, dtype=torch.long) for k, x in enumerate(images)])
    return torch.cat(images), labels, names


def to_model_range(images: torch.Tensor, flip: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 images -> float in [-1, 1], flipped left-right where `flip` is True.

    Args:
        images: [B, C, H, W] uint8.
        flip: [B] bool, or None for no flips.
    Returns:
        [B, C, H, W] float32 in [-1, 1].
    """
    if flip is not None:
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    return images.float() / 127.5 - 1.0


def augment(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, H, W] -> float [-1, 1], each image flipped left-right with probability 1/2.

    Runs on the batch's device without reading anything back to the host.
    """
    return to_model_range(batch, torch.rand(batch.shape[0], device=batch.device) < 0.5)


class DeviceBatches:
    """Random batches from a uint8 data set that lives on the training device.

    One random permutation per epoch, drawn on the device, so no batch touches the host.
    With `labels` ([N] long, on the same device) each batch is a pair (images, labels).
    """

    def __init__(self, images: torch.Tensor, batch_size: int, labels: torch.Tensor | None = None):
        self.images, self.batch_size, self.labels = images, batch_size, labels
        self.position, self.order = len(images), None

    def __next__(self) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        n, b = len(self.images), self.batch_size
        if n < b:  # a tiny data set: draw with replacement
            index = torch.randint(0, n, (b,), device=self.images.device)
        else:
            if self.position + b > n:
                self.order, self.position = torch.randperm(n, device=self.images.device), 0
            index = self.order[self.position : self.position + b]
            self.position += b
        return self.images[index] if self.labels is None else (self.images[index], self.labels[index])


class _ImageTensor(torch.utils.data.Dataset):
    """A uint8 tensor (and its labels) as a Dataset; __getitems__ gathers a whole batch in one indexing op."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i] if self.labels is None else (self.images[i], self.labels[i])

    def __getitems__(self, indices: list[int]):
        return self.images[indices] if self.labels is None else (self.images[indices], self.labels[indices])


def _whole_batch(batch):  # collate_fn: the batch is already one tensor (or an (images, labels) pair)
    return batch


class LoaderBatches:
    """--no-data_on_device: batches from a torch DataLoader with --dataloader_workers processes."""

    def __init__(self, images: torch.Tensor, batch_size: int, workers: int, device: torch.device,
                 labels: torch.Tensor | None = None):
        self.device = device
        self.loader = torch.utils.data.DataLoader(
            _ImageTensor(images, labels), batch_size=batch_size, shuffle=True, drop_last=len(images) >= batch_size,
            num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda",
            collate_fn=_whole_batch)
        self.iterator = iter(self.loader)

    def __next__(self) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        try:
            batch = next(self.iterator)
        except StopIteration:  # next epoch
            self.iterator = iter(self.loader)
            batch = next(self.iterator)
        if isinstance(batch, tuple):
            return tuple(t.to(self.device, non_blocking=True) for t in batch)
        return batch.to(self.device, non_blocking=True)


# ----------------------------------------------------------------------------------------
# Images out
# ----------------------------------------------------------------------------------------

def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] float in [0, 1] -> uint8 in [0, 255], as a PNG would store it."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def save_grid(images: torch.Tensor, path: str | Path) -> None:
    """Save [N, C, H, W] images in [0, 1] as one PNG grid, about square."""
    nrow = max(1, round(images.shape[0] ** 0.5))
    save_image(images.float().cpu(), str(path), nrow=nrow, padding=2)


def save_class_grid(images: torch.Tensor, num_classes: int, path: str | Path) -> None:
    """Save [K * n, C, H, W] images in [0, 1], class-major (n of class 0, then n of class 1, ...): one row per class."""
    save_image(images.float().cpu(), str(path), nrow=images.shape[0] // num_classes, padding=2)


def save_guidance_figure(panels: dict[str, torch.Tensor], class_names: list[str], weights: list[float],
                         path: str | Path, scale: int = 2) -> None:
    """The class-by-guidance figure: one panel per thresholding method, a row per class, a column per w.

    Args:
        panels: method name -> [W, K, n, C, H, W] images in [0, 1]: W weights, K classes, n samples per cell.
        class_names: the K row labels. weights: the W column labels.
        scale: each pixel drawn as scale x scale, so that 32x32 samples are big enough to see.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    text_width = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    gap, margin, line = 8, 6, 16
    label_w = int(max(text_width(name, font=font) for name in class_names)) + 2 * margin
    blocks = []
    for method, images in panels.items():
        cells = [[to_uint8(make_grid(images[w, k].float().cpu(), nrow=images.shape[2], padding=1, pad_value=1.0))
                  for w in range(images.shape[0])] for k in range(images.shape[1])]  # [K][W] of [C, h, w] uint8
        cell_h, cell_w = cells[0][0].shape[1] * scale, cells[0][0].shape[2] * scale
        block = Image.new("RGB", (label_w + len(weights) * (cell_w + gap), 2 * line + len(cells) * (cell_h + gap)), "white")
        draw = ImageDraw.Draw(block)
        draw.text((margin, 2), f"threshold: {method}", fill="black", font=font)
        for w, weight in enumerate(weights):
            label = f"w = {weight:g}"
            draw.text((label_w + w * (cell_w + gap) + (cell_w - text_width(label, font=font)) / 2, line + 2), label,
                      fill="black", font=font)
        for k, name in enumerate(class_names):
            top = 2 * line + k * (cell_h + gap)
            draw.text((margin, top + cell_h / 2 - line / 2), name, fill="black", font=font)
            for w, cell in enumerate(cells[k]):
                picture = Image.fromarray(cell.permute(1, 2, 0).numpy()).resize((cell_w, cell_h), Image.NEAREST)
                block.paste(picture, (label_w + w * (cell_w + gap), top))
        blocks.append(block)
    figure = Image.new("RGB", (max(b.width for b in blocks), sum(b.height + gap for b in blocks) - gap), "white")
    top = 0
    for block in blocks:
        figure.paste(block, (0, top))
        top += block.height + gap
    figure.save(str(path))


def save_denoising(frames: list[torch.Tensor], strip_path: str | Path, gif_path: str | Path, strip_columns: int = 11,
                   gif_width: int = 384) -> None:
    """Save the reverse process x_T ... x_0 of a few samples.

    Args:
        frames: T + 1 tensors [N, C, H, W] in [0, 1]: frames[0] is x_T (noise), frames[-1] x_0.
        strip_path: PNG, one row per sample, `strip_columns` evenly spaced steps left to right.
        gif_path: animated GIF, one frame per step (the samples in an about square grid, enlarged
            to at least `gif_width` pixels), the last frame held.
    """
    from PIL import Image

    picks = torch.linspace(0, len(frames) - 1, min(strip_columns, len(frames))).round().long().tolist()
    strip = torch.stack([frames[i].float().cpu() for i in picks], dim=1)  # [N, columns, C, H, W]
    save_image(strip.flatten(0, 1), str(strip_path), nrow=len(picks), padding=2)

    pictures = []
    nrow = math.ceil(frames[0].shape[0] ** 0.5)  # about square, like the sample grid
    for frame in frames:
        grid = make_grid(frame.float().cpu(), nrow=nrow, padding=2)
        picture = Image.fromarray(to_uint8(grid).permute(1, 2, 0).numpy())
        scale = max(1, math.ceil(gif_width / picture.width))  # 32x32 tiles are too small to watch
        pictures.append(picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST))
    durations = [60] * (len(pictures) - 1) + [1500]
    pictures[0].save(str(gif_path), save_all=True, append_images=pictures[1:], duration=durations, loop=0)


# ----------------------------------------------------------------------------------------
# FID
# ----------------------------------------------------------------------------------------

# The Inception weights torchmetrics uses (through torch-fidelity); the standard FID network.
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"


def inception_weights(weights_path: str | None = None, timeout: float = 15.0) -> Path:
    """A local file with the Inception weights: `weights_path`, torch's hub cache, or a download.

    The download goes to torch's hub cache (where torchmetrics would look too) with a network
    timeout, so that a machine without internet learns within seconds, not after training.

    Raises:
        UserError: the file is missing and cannot be downloaded; says how to get it.
    """
    if weights_path:
        if not Path(weights_path).is_file():
            raise UserError(f"--fid_weights {weights_path} does not exist: pass the file downloaded from {INCEPTION_URL}")
        return Path(weights_path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_URL.rsplit("/", 1)[-1]
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(cached.name + ".part")
    try:
        with urllib.request.urlopen(INCEPTION_URL, timeout=timeout) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f)
        os.replace(tmp, cached)
    except Exception as error:  # noqa: BLE001 (URLError, timeouts, HTTP errors, disk errors)
        tmp.unlink(missing_ok=True)
        raise UserError(
            f"--fid needs the Inception weights and cannot download them ({getattr(error, 'reason', error)}): "
            f"download {INCEPTION_URL} where there is internet and pass --fid_weights PATH "
            f"(or put it at {cached}), or run without --fid"
        ) from None
    return cached


def check_fid_installed() -> None:
    """--fid with the Inception network needs torchmetrics and torch-fidelity: say so before training.

    Raises:
        UserError: names the missing package and how to get it, online and offline.
    """
    missing = []
    for package, module in (("torch-fidelity", "torch_fidelity"), ("torchmetrics", "torchmetrics")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        packages = " ".join(missing)
        raise UserError(
            f"--fid needs the Python package{'s' * (len(missing) > 1)} {packages}, not installed: run "
            f"`pip install {packages}` (on Kaggle with the internet off: turn the internet on in Settings, or attach "
            f"a dataset holding the wheel{'s' * (len(missing) > 1)} and `pip install --no-index --find-links "
            f"<that dataset> {packages}`), or run without --fid")


def make_fid_metric(weights_path: str | None = None, feature: nn.Module | None = None):
    """torchmetrics' FrechetInceptionDistance on uint8 images, real statistics kept across resets.

    Args:
        weights_path: Inception weights file (see `inception_weights`); unused with `feature`.
        feature: a custom feature extractor, uint8 [B, 3, H, W] -> [B, d]; None: the standard Inception network.
    """
    if feature is None:
        check_fid_installed()
    from torchmetrics.image.fid import FrechetInceptionDistance

    # sync_on_compute=False: only rank 0 computes FID, so there are no other ranks to wait for.
    options = dict(reset_real_features=False, normalize=False, sync_on_compute=False)
    if feature is not None:
        return FrechetInceptionDistance(feature=feature, **options)
    path = inception_weights(weights_path)
    try:
        return FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(path), **options)
    except Exception as error:  # noqa: BLE001 (unpickling and load_state_dict raise many types)
        what = f"--fid_weights {path}" if weights_path else f"the downloaded Inception weights {path}"
        fix = "pass" if weights_path else "delete it to download it again, or pass --fid_weights with"
        raise UserError(f"{what} is not the Inception network's weights ({type(error).__name__}): {fix} the file "
                        f"from {INCEPTION_URL}") from None


def _batches(images: torch.Tensor, batch_size: int) -> Iterable[torch.Tensor]:
    return (images[i : i + batch_size] for i in range(0, images.shape[0], batch_size))


def load_real_statistics(metric, real_images: torch.Tensor, cache_path: str | Path, batch_size: int = 100) -> None:
    """Feed the real images to `metric` once; later calls read their statistics from `cache_path`.

    The cache is keyed by a hash of the images and by the feature extractor, so another data
    set or another extractor recomputes it.

    Args:
        real_images: [N, 3, S, S] uint8.
    """
    device = metric.real_features_sum.device
    key = hashlib.sha1(real_images.contiguous().numpy().tobytes()).hexdigest() + f"/{type(metric.inception).__name__}"
    names = ["real_features_sum", "real_features_cov_sum", "real_features_num_samples"]
    cache_path = Path(cache_path)
    if cache_path.is_file():
        saved = torch.load(cache_path, map_location="cpu", weights_only=True)
        if saved.get("key") == key:
            for name in names:
                setattr(metric, name, saved[name].to(device))
            return
    for batch in tqdm(list(_batches(real_images, batch_size)), desc="FID: real images", unit="batch", leave=False):
        metric.update(batch.to(device), real=True)
    atomic_torch_save({"key": key, **{name: getattr(metric, name).cpu() for name in names}}, cache_path)


def compute_fid(metric, fake_batches: Iterable[torch.Tensor]) -> float:
    """FID of generated images against the real statistics already in `metric`.

    Args:
        fake_batches: tensors [B, 3, S, S], float in [0, 1] or uint8.
    """
    metric.reset()  # forgets the previous fake images only (reset_real_features=False)
    device = metric.real_features_sum.device
    for batch in fake_batches:
        batch = batch if batch.dtype == torch.uint8 else to_uint8(batch)
        metric.update(batch.to(device), real=False)
    return float(metric.compute())


# ----------------------------------------------------------------------------------------
# GPU checks
# ----------------------------------------------------------------------------------------

def check_gpu_supported(device: torch.device, capability: tuple[int, int] | None = None,
                        arch_list: list[str] | None = None, name: str | None = None) -> None:
    """Stop now, in one line, when this torch build has no kernels for the GPU.

    torch.cuda.is_available() is True on a GPU that the wheel was not compiled for (Kaggle's
    P100, sm_60, on current wheels), and the first kernel then fails with a raw "no kernel image
    is available". A cubin for sm_XY runs on GPUs of the same major version with minor >= Y;
    PTX (compute_XY) is compiled by the driver for any GPU with capability >= XY.
    `capability`, `arch_list` and `name` default to the real GPU's (tests pass their own).

    Raises:
        UserError: names the GPU, what this torch supports and what to pick instead.
    """
    if device.type != "cuda":
        return
    capability = capability or torch.cuda.get_device_capability(device)
    arch_list = torch.cuda.get_arch_list() if arch_list is None else arch_list
    if not arch_list:  # a build that does not say (e.g. ROCm): nothing to check against
        return
    device_cc = 10 * capability[0] + capability[1]

    def runs_here(arch: str) -> bool:
        kind, _, number = arch.partition("_")
        code_cc = int(number.rstrip("af"))
        if kind == "compute":
            return code_cc <= device_cc
        return code_cc // 10 == capability[0] and code_cc <= device_cc and (code_cc == device_cc or number.isdigit())

    if any(runs_here(arch) for arch in arch_list):
        return
    name = name or torch.cuda.get_device_name(device)
    raise UserError(
        f"--device {device}: this torch {torch.__version__} has no GPU kernels for the {name} (compute capability "
        f"{capability[0]}.{capability[1]}, sm_{device_cc}); it supports {' '.join(arch_list)}. Pick another GPU "
        "(on Kaggle: Settings > Accelerator > GPU T4 x2, not P100; on Colab: T4), or run with --device cpu")


# ----------------------------------------------------------------------------------------
# Checkpoint files
# ----------------------------------------------------------------------------------------

def atomic_torch_save(obj: object, path: str | Path) -> None:
    """torch.save through a temporary file and a rename, so `path` is always whole.

    os.replace is atomic on POSIX and Windows: a reader sees the old file or the new one,
    never half of one, even if this process dies mid-write.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it a normal file's permissions
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise




class WriteFailed(UserError):
    """A file could not be written even after retries (a full disk, a dropped network mount)."""


def write_with_retries(write: Callable[[], None], path: str | Path, tries: int = 3, first_wait: float = 2.0) -> None:
    """Call `write()`; on an OSError wait and try again (2 s, then 4 s, ...), `tries` times in all.

    A Google Drive or network mount can drop for a few seconds; a retry rides that out.

    Raises:
        WriteFailed: every try failed; one line naming `path`, the last error and the tries.
    """
    waited = 0.0
    for attempt in range(tries):
        try:
            write()
            return
        except OSError as error:
            last = error
            if attempt + 1 < tries:
                wait = first_wait * 2**attempt
                time.sleep(wait)
                waited += wait
    reason = last.strerror or str(last) or type(last).__name__
    raise WriteFailed(f"cannot write {path} ({reason}), tried {tries} times over {waited:.0f} s")


# ----------------------------------------------------------------------------------------
# Exponential moving average of the weights
# ----------------------------------------------------------------------------------------

def ema_warmup_decay(decay: float, updates: int) -> float:
    """The EMA's decay after `updates` updates: min(decay, (1 + n) / (10 + n)).

    The warm-up stops a short run's average from remembering mostly the random initial weights.
    """
    return min(decay, (1 + updates) / (10 + updates))
