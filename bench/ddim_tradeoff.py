"""Sample quality against sampling steps: DDIM at a few step counts next to the ancestral sampler.

    python bench/ddim_tradeoff.py --load_path results/model.pt --fid_weights weights-inception-2015-12-05-6726825d.pth
    python bench/ddim_tradeoff.py --load_path results/model.pt --samples 1000 --ddim_steps 5 10 25 50

For each sampler it draws --samples images from the checkpoint's EMA weights and compares them with
the images the checkpoint was trained on (its --data_path/--data_class, or the demo set):

  * with --fid_weights (the Inception file from fid.INCEPTION_URL): FID, through the same code
    as main.py --fid;
  * without it (no internet, no weights): a PIXEL FRECHET DISTANCE, the Frechet distance between
    Gaussians fitted to 4x4-average-pooled pixels (48 numbers per image). It is NOT FID and its
    values are not comparable with published FIDs; it only ranks samplers of one model against
    the same real images (lower is closer).

Prints a Markdown table with the seconds each sampler took.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fid  # noqa: E402
import grids  # noqa: E402
import serve  # noqa: E402
import training_data  # noqa: E402
import utils  # noqa: E402
from ddim import ddim_sample  # noqa: E402


class PooledPixels(nn.Module):
    """uint8 [B, 3, H, W] -> [B, 48]: the image averaged down to 4x4, in [0, 1]. Not Inception."""

    num_features = 48

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1)


def real_images(args: dict) -> torch.Tensor:
    if args.get("data_path"):
        return training_data.load_image_folder(Path(args["data_path"]) / args["data_class"], args["image_size"])
    return training_data.make_demo_dataset(args["demo_images"], args["image_size"], seed=0)


def main() -> None:
    p = utils.CommandLineParser(prog="bench/ddim_tradeoff.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--load_path", required=True, help="a model.pt written by main.py")
    p.add_argument("--samples", type=int, default=1000, help="generated images per sampler")
    p.add_argument("--ddim_steps", type=int, nargs="+", default=[5, 10, 25, 50], help="DDIM step counts to try")
    p.add_argument("--ddim_eta", type=float, default=0.0, help="DDIM's eta")
    p.add_argument("--batch_size", type=int, default=250, help="images sampled at once")
    p.add_argument("--fid_weights", default=None, help="Inception weights: report real FID instead of the pixel proxy")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    checkpoint = torch.load(a.load_path, map_location="cpu", weights_only=True)
    model = serve.load_model(a.load_path, "model", torch.device("cpu"))
    diffusion, T = model.diffusion, model.diffusion.num_timesteps
    if a.fid_weights:
        metric, name = fid.make_fid_metric(a.fid_weights), "FID (Inception)"
    else:
        metric, name = fid.make_fid_metric(feature=PooledPixels()), "pixel Frechet distance (NOT FID)"
    real = real_images(checkpoint["args"])
    for i in range(0, len(real), 500):
        metric.update(real[i : i + 500], real=True)

    settings = [(f"DDIM, {s} steps, eta {a.ddim_eta:g}", s) for s in a.ddim_steps if 1 <= s <= T] + [(f"ancestral, {T} steps", None)]
    print(f"{a.load_path}: trained {checkpoint['step']} steps, T = {T}; {a.samples} samples per row against "
          f"{len(real)} training images\n")
    print(f"| sampler | network calls / image | {name} | sampling seconds |")
    print("|---|---:|---:|---:|")
    for label, steps in settings:
        torch.manual_seed(a.seed)
        metric.reset()
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, a.samples, a.batch_size):
                n = min(a.batch_size, a.samples - i)
                images = diffusion.sample(n) if steps is None else ddim_sample(diffusion, n, steps, a.ddim_eta)
                metric.update(grids.to_uint8(images), real=False)
        seconds = time.perf_counter() - start
        print(f"| {label} | {steps or T} | {float(metric.compute()):.4f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    sys.exit(utils.run_command_line(main))
