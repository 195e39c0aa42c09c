"""FID (Frechet Inception Distance): how close the samples' statistics are to the real images'.

    check_fid_installed    --fid needs torchmetrics and torch-fidelity: say so before training
    inception_weights      the Inception network's weights: a given file, torch's cache, or a download
    make_fid_metric        torchmetrics' FrechetInceptionDistance, real statistics kept across resets
    load_real_statistics   the real images' statistics, computed once and cached on disk
    compute_fid            FID of a stream of generated batches

Lower is better; the real statistics are computed from the training images themselves.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from grids import to_uint8
from utils import UserError, atomic_torch_save

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
