"""FID through torchmetrics with a small injected feature extractor (no download): the lecture's
"disturbance level" picture, the real-statistics cache, the weights look-up, and FID in a training run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2.functional import gaussian_blur

import fid
import main
import training_data
from utils import UserError


class SmallFeatures(nn.Module):
    """uint8 [B, 3, H, W] -> 48 features: fixed random 3x3 filters (edges, texture) and colour, pooled."""

    num_features = 48

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0)))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255
        texture = F.adaptive_avg_pool2d(torch.tanh(self.conv(x)).abs(), 2).flatten(1)  # [B, 32]
        colour = F.adaptive_avg_pool2d(x, 2).flatten(1)  # [B, 12]
        spread = x.flatten(2).std(dim=2)  # [B, 3]
        return torch.cat([texture, colour, spread, x.mean(dim=(1, 2, 3))[:, None]], dim=1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def real():
    return training_data.make_demo_dataset(400, 32, seed=0)


def fid_of(metric, images: torch.Tensor) -> float:
    return fid.compute_fid(metric, images.split(100))


@pytest.fixture
def metric(real, tmp_path):
    metric = fid.make_fid_metric(feature=SmallFeatures())
    fid.load_real_statistics(metric, real, tmp_path / "stats.pt")
    return metric


def test_fid_of_a_set_against_itself_is_about_zero(metric, real):
    assert abs(fid_of(metric, real)) < 1e-3
    other_half = training_data.make_demo_dataset(400, 32, seed=1)  # the same distribution, other images: small
    assert fid_of(metric, other_half) < 0.2 * fid_of(metric, torch.rand(400, 3, 32, 32))


def test_fid_grows_with_the_noise_level(metric, real):
    clean = real.float() / 255
    g = torch.Generator().manual_seed(1)
    scores = [fid_of(metric, (clean + sigma * torch.randn(clean.shape, generator=g)).clamp(0, 1))
              for sigma in (0.0, 0.05, 0.1, 0.2, 0.4)]
    assert all(a < b for a, b in zip(scores, scores[1:])), scores


def test_fid_grows_with_the_blur_level(metric, real):
    clean = real.float() / 255
    scores = [fid_of(metric, clean)] + [fid_of(metric, gaussian_blur(clean, [9, 9], [sigma, sigma]))
                                        for sigma in (0.5, 1.0, 2.0, 3.0)]
    assert all(a < b for a, b in zip(scores, scores[1:])), scores


def test_real_statistics_are_computed_once_and_cached(real, tmp_path):
    calls = []

    class Counting(SmallFeatures):
        def forward(self, x):
            calls.append(len(x))
            return super().forward(x)

    first = fid.make_fid_metric(feature=Counting())
    fid.load_real_statistics(first, real, tmp_path / "stats.pt")
    assert sum(calls) == len(real) and (tmp_path / "stats.pt").is_file()
    calls.clear()
    second = fid.make_fid_metric(feature=Counting())
    fid.load_real_statistics(second, real, tmp_path / "stats.pt")
    assert calls == []  # read from the cache
    fake = torch.rand(100, 3, 32, 32)
    assert fid_of(first, fake) == pytest.approx(fid_of(second, fake))
    calls.clear()
    fid.load_real_statistics(fid.make_fid_metric(feature=Counting()), real[:200], tmp_path / "stats.pt")
    assert sum(calls) == 200  # other images: recomputed


def test_inception_weights_come_from_the_flag_the_cache_or_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(fid, "INCEPTION_URL", (tmp_path / "offline" / "weights-inception.pth").as_uri())
    with pytest.raises(UserError, match="--fid needs the Inception weights.*--fid_weights"):
        fid.inception_weights()
    local = tmp_path / "my-weights.pth"
    local.write_bytes(b"weights")
    assert fid.inception_weights(str(local)) == local
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / "weights-inception.pth"
    assert list(cached.parent.iterdir()) == []  # the failed download left no partial file
    cached.write_bytes(b"weights")
    assert fid.inception_weights() == cached
    # "Download" from a reachable (local) address into the cache.
    cached.unlink()
    (tmp_path / "offline").mkdir()
    (tmp_path / "offline" / "weights-inception.pth").write_bytes(b"downloaded")
    assert fid.inception_weights().read_bytes() == b"downloaded"


@pytest.mark.slow
def test_training_with_fid_logs_it(tmp_path, monkeypatch, capsys):
    made, original = [], fid.make_fid_metric

    def small_metric(weights_path=None, feature=None):
        made.append(weights_path)
        return original(feature=SmallFeatures())

    monkeypatch.setattr(fid, "make_fid_metric", small_metric)
    flags = ["--unet_dim", "8", "--unet_dim_mults", "1", "2", "--time_steps", "3", "--batch_size", "8",
             "--image_size", "16", "--demo_images", "64", "--train_steps", "2", "--save_and_sample_every", "1", "--fid",
             "--fid_samples", "60", "--sample_batch_size", "30", "--save_folder", str(tmp_path)]
    assert main.main(flags) == 0
    out = capsys.readouterr().out
    assert made == [None] and out.count("FID ") == 2
    rows = [r.split(",") for r in (tmp_path / "log.csv").read_text().splitlines()[1:]]
    assert [r[0] for r in rows] == ["1", "2"] and all(float(r[3]) > 0 for r in rows)
    assert (tmp_path / "fid_real_statistics.pt").is_file()
