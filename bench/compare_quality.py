"""Sample quality at an equal number of steps: our U-Net against lucidrains' (denoising-diffusion-pytorch).

Both networks are trained by the same code, our GaussianDiffusion (Algorithm 1, L1 loss on the noise),
on exactly the same batches: the same images, flips, time steps and noise at every step, the same
Adam, gradient clipping and EMA. So the loss curves differ only by the network. Then both EMA models
sample from the same starting noise and the same per-step noise, and the script prints

  - the training loss, averaged over windows of steps (the curve, as a table; all of it goes to CSV),
  - an evaluation loss on fixed images, time steps and noise, with the online and the EMA weights,
  - seconds per training step,

and writes sample grids: one per network and `side_by_side.png` (real | ours | lucidrains').
This is a manual check for the README, not a test: it needs real images and minutes of CPU.

    python bench/compare_quality.py --data ../shared/data/cifar10-cat/train/cat --steps 1500 --out /tmp/quality

--baseline_unet PATH adds a third network, the `Unet` class of another copy of unet.py (for example the
previous version from git), to check that a speed change to unet.py did not cost quality.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import sys
import time
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel
from torchvision.utils import make_grid, save_image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trainer  # noqa: E402
import training_data  # noqa: E402
import utils  # noqa: E402
from diffusion import GaussianDiffusion  # noqa: E402
from unet import Unet, count_parameters  # noqa: E402


class LucidrainsNet(torch.nn.Module):
    """lucidrains' Unet behind our interface: model(x_t [B, C, H, W], t [B] long) -> eps_hat [B, C, H, W]."""

    def __init__(self, dim: int, dim_mults: tuple[int, ...]):
        super().__init__()
        from denoising_diffusion_pytorch import Unet as TheirUnet

        self.net = TheirUnet(dim=dim, dim_mults=dim_mults, channels=3)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t)


def load_unet_class(path: Path):
    spec = importlib.util.spec_from_file_location("baseline_unet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Unet


def parse_args() -> argparse.Namespace:
    p = utils.CommandLineParser(prog=f"bench/{Path(__file__).name}", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a folder of images (e.g. ../shared/data/cifar10-cat/train/cat)")
    p.add_argument("--out", default="results/quality", help="folder for the grids and the loss CSV")
    p.add_argument("--steps", type=int, default=500, help="training steps for each network")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--unet_dim", type=int, default=16)
    p.add_argument("--unet_dim_mults", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--time_steps", type=int, default=50)
    p.add_argument("--learning_rate", type=float, default=1e-3, help="Adam, for every network (main.py's default)")
    p.add_argument("--grad_clip", type=float, default=1.0)
    p.add_argument("--ema_decay", type=float, default=0.995)
    p.add_argument("--samples", type=int, default=64, help="images per sample grid")
    p.add_argument("--window", type=int, default=100, help="steps per row of the loss table")
    p.add_argument("--eval_every", type=int, default=250, help="steps between evaluation losses")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline_unet", type=Path, help="another unet.py whose Unet is trained too")
    p.add_argument("--only", nargs="+", choices=["ours", "lucidrains", "baseline"], help="train only these networks")
    args = p.parse_args()
    if min(args.steps, args.batch_size, args.window, args.eval_every, args.samples) < 1:
        p.error("--steps, --batch_size, --window, --eval_every and --samples must be at least 1")
    if not Path(args.data).is_dir():
        p.error(f"--data {args.data} is not a folder of images")
    if args.only and "baseline" in args.only and not args.baseline_unet:
        p.error("--only baseline needs --baseline_unet PATH")
    if args.baseline_unet and not args.baseline_unet.is_file():
        p.error(f"--baseline_unet {args.baseline_unet} does not exist")
    return args


def plan_step(step: int, num_images: int, args: argparse.Namespace) -> tuple[torch.Tensor, ...]:
    """Everything random about one training step, from a generator seeded by the step.

    So every network sees the same images, flips, time steps and noise, without storing them.
    Returns: index [B] long, flip [B] bool, t [B] long, noise [B, 3, S, S].
    """
    g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
    b, s = args.batch_size, args.image_size
    index = torch.randint(0, num_images, (b,), generator=g)
    flip = torch.rand(b, generator=g) < 0.5
    t = torch.randint(0, args.time_steps, (b,), generator=g)
    noise = torch.randn(b, 3, s, s, generator=g)
    return index, flip, t, noise


def ema_with_warmup(decay: float):
    """The trainer's EMA update (trainer.ema_warmup_decay) for an AveragedModel."""
    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], model_params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        torch._foreach_lerp_(ema_params, model_params, 1.0 - trainer.ema_warmup_decay(decay, int(num_averaged)))
    return update


def train(name: str, net: torch.nn.Module, images: torch.Tensor, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    diffusion = GaussianDiffusion(net, image_size=args.image_size, channels=3, timesteps=args.time_steps)
    # channels_last only makes the CPU convolutions faster; it does not change the arithmetic.
    diffusion.to(memory_format=torch.channels_last)
    ema = AveragedModel(diffusion, multi_avg_fn=ema_with_warmup(args.ema_decay), use_buffers=True)
    optimizer = torch.optim.Adam(diffusion.parameters(), lr=args.learning_rate)
    losses, evals = [], {}
    train_seconds = 0.0
    for step in range(args.steps):
        start = time.perf_counter()
        index, flip, t, noise = plan_step(step, len(images), args)
        x_0 = training_data.to_model_range(images[index], flip).contiguous(memory_format=torch.channels_last)
        loss = diffusion.p_losses(x_0, t, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), args.grad_clip)
        optimizer.step()
        ema.update_parameters(diffusion)
        losses.append(loss.item())
        train_seconds += time.perf_counter() - start
        if (step + 1) % args.window == 0:
            recent = sum(losses[-args.window:]) / args.window
            print(f"  {name}: step {step + 1}/{args.steps}  loss {recent:.4f}  "
                  f"{train_seconds / (step + 1):.3f} s/step", flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            evals[step + 1] = (eval_loss(diffusion, images, args), eval_loss(ema.module, images, args))
    return {"ema": ema.module.eval(), "losses": losses, "evals": evals, "seconds_per_step": train_seconds / args.steps,
            "params": count_parameters(net)}


@torch.inference_mode()
def eval_loss(diffusion: GaussianDiffusion, images: torch.Tensor, args: argparse.Namespace,
              by_time: bool = False) -> float | list[float]:
    """The L1 loss on 1,024 fixed training images, each at a fixed time step (0..T-1 in turn) with fixed noise.

    The same for every network and every call, so unlike the training loss it has no batch-to-batch noise.
    by_time: instead, the loss in each fifth of the time steps (low t = little noise first).
    """
    g = torch.Generator().manual_seed(args.seed + 1)
    chosen = images[torch.randperm(len(images), generator=g)[:1024]]
    per_image, steps = [], []
    for start in range(0, len(chosen), 256):
        x_0 = training_data.to_model_range(chosen[start:start + 256])
        t = (torch.arange(len(x_0)) + start) % args.time_steps
        noise = torch.randn(x_0.shape, generator=g)
        x_t = diffusion.q_sample(x_0, t, noise)
        per_image.append((diffusion.model(x_t, t) - noise).abs().mean(dim=(1, 2, 3)))
        steps.append(t)
    per_image, steps = torch.cat(per_image), torch.cat(steps)
    if not by_time:
        return per_image.mean().item()
    fifth = (steps * 5) // args.time_steps
    return [per_image[fifth == i].mean().item() for i in range(5)]


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = training_data.load_image_folder(args.data, args.image_size)
    print(f"{len(images)} images from {args.data}; {args.steps} steps of batch {args.batch_size} for each network")
    mults = tuple(args.unet_dim_mults)

    builders = {
        "ours": lambda: Unet(dim=args.unet_dim, dim_mults=mults, channels=3),
        "lucidrains": lambda: LucidrainsNet(args.unet_dim, mults),
    }
    if args.baseline_unet:
        baseline_class = load_unet_class(args.baseline_unet)
        builders["baseline"] = lambda: baseline_class(dim=args.unet_dim, dim_mults=mults, channels=3)
    if args.only:
        builders = {name: build for name, build in builders.items() if name in args.only}

    results = {}
    for name, build in builders.items():
        torch.manual_seed(args.seed)
        results[name] = train(name, build(), images, args)
        torch.manual_seed(args.seed + 2)  # the same x_T and per-step noise for every network
        results[name]["samples"] = results[name]["ema"].sample(args.samples)
        save_image(results[name]["samples"], out / f"samples_{name}.png", nrow=8)
        results[name]["by_time"] = eval_loss(results[name]["ema"], images, args, by_time=True)
        torch.save(results[name]["ema"].state_dict(), out / f"ema_{name}.pt")

    real = training_data.to_model_range(images[:args.samples]).add(1).div(2)
    panels = [make_grid(real, nrow=8, padding=1)] + [make_grid(r["samples"], nrow=8, padding=1) for r in results.values()]
    gap = torch.ones(3, panels[0].shape[1], 6)
    save_image(torch.cat([x for p in panels for x in (p, gap)][:-1], dim=2), out / "side_by_side.png")

    with open(out / "losses.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", *results])
        for step in range(args.steps):
            writer.writerow([step + 1, *(f"{r['losses'][step]:.5f}" for r in results.values())])

    print(f"\ntraining loss (L1 on the noise, same batches), mean over windows of {args.window} steps:")
    print("| steps | " + " | ".join(results) + " |")
    print("|---:|" + "---:|" * len(results))
    for end in range(args.window, args.steps + 1, args.window):
        row = [sum(r["losses"][end - args.window:end]) / args.window for r in results.values()]
        print(f"| {end - args.window + 1}-{end} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
    print("\nevaluation loss (L1, 1,024 fixed images at fixed t and noise), online weights / EMA weights:")
    print("| step | " + " | ".join(results) + " |")
    print("|---:|" + "---:|" * len(results))
    for step in next(iter(results.values()))["evals"]:
        print(f"| {step} | " + " | ".join("{:.4f} / {:.4f}".format(*r["evals"][step]) for r in results.values()) + " |")
    T = args.time_steps
    print("\nevaluation loss of the EMA weights by time step (t counted from 0):")
    print("| network | " + " | ".join(f"t {i * T // 5}-{(i + 1) * T // 5 - 1}" for i in range(5)) + " |")
    print("|---|" + "---:|" * 5)
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in r["by_time"]) + " |")
    print("\n| network | parameters | s/step (CPU) | train loss (last window) | eval loss, online | eval loss, EMA |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        last = sum(r["losses"][-args.window:]) / len(r["losses"][-args.window:])
        online, ema = r["evals"][args.steps]
        print(f"| {name} | {r['params'] / 1e6:.2f}M | {r['seconds_per_step']:.3f} | {last:.4f} | {online:.4f} | {ema:.4f} |")
    print(f"\ngrids: {out}/side_by_side.png (real | " + " | ".join(results) + f"), {out}/samples_<network>.png; "
          f"losses: {out}/losses.csv; EMA weights: {out}/ema_<network>.pt")


if __name__ == "__main__":
    sys.exit(utils.run_command_line(main))
