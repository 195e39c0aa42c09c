"""Sample quality of a trained energy-based model (Part 3) without Inception weights: a manual check.

FID needs the Inception network's weights, which cannot be downloaded everywhere. This script runs
the project's own FID code (fid.make_fid_metric, load_real_statistics, compute_fid) with another
feature extractor: the images average-pooled to 8x8 (192 numbers). The result is a Frechet distance
between Gaussians fitted to those pixel features; it is NOT FID and not comparable with published
numbers, only between rows of its own table. For scale it also prints the distance of held-out
real images (a floor) and of uniform noise (a ceiling), and the mean energy of each set.
--compare_with adds a row for a Part 1 diffusion checkpoint's samples (Algorithm 2, EMA weights),
measured by the same code: train both for the same wall-clock time to compare the two methods.

    python bench/energy_quality.py --checkpoint results/model.pt --data ../shared/data/cifar10-cat/train/cat
    python bench/energy_quality.py --checkpoint ebm/model.pt --data ... --compare_with ddpm/model.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fid  # noqa: E402
import serve  # noqa: E402 (its load_model reads any main.py checkpoint)
import training_data  # noqa: E402
from energy import EnergyModel, EnergyNet  # noqa: E402


class PooledPixels(nn.Module):
    """uint8 [B, 3, H, W] -> [B, 192]: the image average-pooled to 8x8, in [0, 1]."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(images.float() / 255, 8).flatten(1).double()


def load_model(path: Path, use_ema: bool) -> EnergyModel:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    a = checkpoint["args"]
    model = EnergyModel(EnergyNet(3, a["energy_dim"]), image_size=a["image_size"], step_size=a["step_size"],
                        noise_scale=a["noise_scale"], langevin_steps=a["langevin_steps"], alpha=a["alpha"],
                        buffer_size=a["buffer_size"], sample_steps=a["sample_steps"])
    if use_ema:
        state = {k[len("module."):]: v for k, v in checkpoint["ema"].items() if k.startswith("module.")}
        state["replay"] = checkpoint["model"]["replay"]  # the EMA's buffer is an average of buffers: use the real one
    else:
        state = checkpoint["model"]
    model.load_state_dict(state)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a model.pt written by main.py --model ebm")
    parser.add_argument("--data", type=Path, required=True, help="the folder of training images (one class)")
    parser.add_argument("--samples", type=int, default=500, help="images in every row (sampled, held out, buffer)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare_with", type=Path, action="append", default=[],
                        help="a Part 1 diffusion model.pt: its samples get a row too (repeatable)")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    model = load_model(args.checkpoint, use_ema=True)
    real = training_data.load_image_folder(args.data, model.image_size)
    order = torch.randperm(len(real))
    held_out, reference = real[order[: args.samples]], real[order[args.samples:]]

    metric = fid.make_fid_metric(feature=PooledPixels())
    fid.load_real_statistics(metric, reference, Path("/tmp") / "energy_quality_real_stats.pt")

    def distance(images01: torch.Tensor) -> float:
        return fid.compute_fid(metric, [images01[i : i + 250] for i in range(0, len(images01), 250)])

    def energy(images01: torch.Tensor) -> float:
        with torch.no_grad():
            return model.energy(images01 * 2 - 1).mean().item()

    rows = {
        "held-out real images (floor)": held_out.float() / 255,
        "uniform noise (ceiling)": torch.rand(args.samples, 3, model.image_size, model.image_size),
        "replay buffer (the training chains)": (model.replay[torch.randperm(len(model.replay))[: args.samples]] + 1) / 2,
    }
    samples = torch.cat([model.sample(min(100, args.samples - i)) for i in range(0, args.samples, 100)])
    rows[f"sample(): {model.sample_steps} Langevin steps from noise, EMA weights"] = samples
    for path in args.compare_with:
        diffusion = serve.load_model(str(path), path.parent.name, torch.device("cpu")).diffusion
        with torch.no_grad():
            images = torch.cat([diffusion.sample(min(100, args.samples - i)) for i in range(0, args.samples, 100)])
        step = torch.load(path, map_location="cpu", weights_only=True)["step"]
        rows[f"diffusion {path} (step {step}): Algorithm 2, {diffusion.num_timesteps} steps, EMA weights"] = images
    print(f"checkpoint {args.checkpoint} (step {torch.load(args.checkpoint, map_location='cpu', weights_only=True)['step']})")
    print("| images | n | Frechet distance, 8x8 pixels (not FID) | mean energy (EMA weights) |")
    print("| --- | ---: | ---: | ---: |")
    for name, images in rows.items():
        print(f"| {name} | {len(images)} | {distance(images.clamp(0, 1)):.4f} | {energy(images.clamp(0, 1)):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
