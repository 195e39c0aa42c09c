"""The training images: the built-in demo set, image folders read once into a cache, and batches.

    make_demo_dataset      procedural shapes, made in a fraction of a second, no download
    load_image_folder      one folder of jpg/png/webp files, decoded once and cached beside them
    load_class_folders     Part 2: one folder per class, one label per folder
    augment                a uint8 batch -> float in [-1, 1], randomly flipped left-right
    DeviceBatches          random batches from images that live on the training device
    LoaderBatches          the same from a torch DataLoader (--no-data_on_device)
    checked_data_path      --data_path, and class_folder --data_class, checked before any slow work

Images live as uint8 tensors [N, 3, S, S] (S = image_size) from the disk to the training
device, and become float only inside a batch.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from utils import UserError, atomic_torch_save

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


def checked_data_path(data_path: str | Path) -> Path:
    """--data_path as a Path, once it is known to be a folder.

    Raises:
        UserError: it is a file, or it does not exist; says what to pass instead.
    """
    data_path = Path(data_path)
    if data_path.is_file():
        raise UserError(f"--data_path {data_path} is a file: pass the folder that holds the class folders "
                        "(see README.md, \"Homework data\")")
    if not data_path.is_dir():
        raise UserError(f"--data_path {data_path} does not exist: pass the folder that holds the class "
                        "folders (see README.md, \"Homework data\"), or omit it for the demo set")
    return data_path


def class_folder(data_path: Path, data_class: str) -> Path:
    """data_path/data_class, the folder of one class's images (Part 1 trains on one class).

    Raises:
        UserError: there is no such folder; names the folders there are.
    """
    folder = data_path / data_class
    if not folder.is_dir():
        classes = list_class_folders(data_path)
        found = f"it has {', '.join(classes[:8])}" if classes else "it has no subfolders"
        raise UserError(f"--data_class {data_class}: there is no folder {folder} ({found}); images are "
                        "read from data_path/data_class/")
    return folder


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

