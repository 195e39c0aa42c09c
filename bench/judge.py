"""An independent judge of sample quality: a Frechet distance in the features of a small CIFAR-10 classifier.

FID needs the Inception network's weights, which cannot be downloaded everywhere. This judge trains
its own feature extractor instead: a small CNN that tells cats from airplanes, automobiles and birds
(the four classes in ../shared/data), trained once on the CPU and cached under results/judge/. Its
penultimate layer (128 numbers) feeds the project's FID code (fid.make_fid_metric,
load_real_statistics, compute_fid), so a row's figure is the Frechet distance between Gaussians fitted
to those features of the row's images and of held-out real cats. The held-out cats are never seen by
the classifier (the generative models do train on all 5,000 cats: the judge measures fit, not
generalisation). Figures compare only with rows of the same judge (same seed and data).

Reference rows give the scale: real training cats (the floor), the same cats blurred, the other
classes, uniform noise. --ebm adds the energy model's sample() and replay buffer (EMA weights, as
the trainer's grids), --ddpm a Part 1 diffusion model's samples (Algorithm 2, EMA weights).

    python bench/judge.py                                   # train (or load) the judge; reference rows
    python bench/judge.py --ebm runs/ebm/model.pt --ddpm runs/ddpm/model.pt --grid /tmp/side_by_side.png
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import nn
from torchvision.utils import save_image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from energy_quality import load_model as load_energy_model  # noqa: E402

import fid  # noqa: E402
import training_data  # noqa: E402
import utils  # noqa: E402

CLASSES = ("cat", "airplane", "automobile", "bird")
HELD_OUT = 1000  # images per class the classifier never sees: its test set, and the cats every row is compared with


class JudgeNet(nn.Module):
    """A small CNN, [B, 3, 32, 32] in [-1, 1] -> 4 logits; `features` gives its penultimate layer [B, 128]."""

    def __init__(self, num_classes: int = len(CLASSES)):
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

        self.body = nn.Sequential(block(3, 32), block(32, 32), nn.MaxPool2d(2),    # [B, 32, 16, 16]
                                  block(32, 64), block(64, 64), nn.MaxPool2d(2),   # [B, 64, 8, 8]
                                  block(64, 128), nn.MaxPool2d(2),                 # [B, 128, 4, 4]
                                  nn.Flatten(), nn.Linear(128 * 16, 128), nn.ReLU())
        self.head = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class JudgeFeatures(nn.Module):
    """uint8 [B, 3, 32, 32] -> [B, 128] float64: the torchmetrics feature extractor."""

    num_features = 128  # read by torchmetrics instead of probing with a 299x299 image

    def __init__(self, net: JudgeNet):
        super().__init__()
        self.net = net.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(images.float() / 127.5 - 1).double()


def load_split(data_root: Path, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{class: (train [N-HELD_OUT, 3, 32, 32] uint8, held_out [HELD_OUT, 3, 32, 32] uint8)}, a fixed split."""
    folders = {"cat": data_root / "cifar10-cat/train/cat"}
    folders.update({c: data_root / f"cifar10-3class/train/{c}" for c in CLASSES[1:]})
    split = {}
    for name, folder in folders.items():
        images = training_data.load_image_folder(folder, 32)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
        split[name] = images[order[HELD_OUT:]], images[order[:HELD_OUT]]
    return split


def train_judge(split: dict, epochs: int, seed: int) -> tuple[JudgeNet, float]:
    """Train JudgeNet on the training parts (random flips and 2-pixel shifts); returns it and its held-out accuracy."""
    torch.manual_seed(seed)
    x = torch.cat([split[c][0] for c in CLASSES])
    y = torch.cat([torch.full((len(split[c][0]),), i) for i, c in enumerate(CLASSES)])
    net = JudgeNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    steps_per_epoch = len(x) // 128
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=epochs * steps_per_epoch)
    for epoch in range(epochs):
        net.train()
        order, start = torch.randperm(len(x)), time.time()
        for i in range(steps_per_epoch):
            idx = order[i * 128 : (i + 1) * 128]
            batch = x[idx].float() / 127.5 - 1
            batch = torch.where(torch.rand(len(idx), 1, 1, 1) < 0.5, batch.flip(3), batch)
            dx, dy = torch.randint(-2, 3, (2,)).tolist()
            batch = torch.roll(F.pad(batch, (2, 2, 2, 2), mode="reflect"), (dy, dx), (2, 3))[..., 2:-2, 2:-2]
            loss = F.cross_entropy(net(batch), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"judge epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, {time.time() - start:.0f} s", flush=True)
    return net.eval(), accuracy(net, split)


@torch.no_grad()
def accuracy(net: JudgeNet, split: dict) -> float:
    correct = sum((net(split[c][1].float() / 127.5 - 1).argmax(1) == i).sum().item() for i, c in enumerate(CLASSES))
    return correct / (HELD_OUT * len(CLASSES))


def load_or_train(split: dict, cache: Path, epochs: int, seed: int) -> tuple[JudgeNet, float]:
    if cache.is_file():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved["epochs"] == epochs and saved["seed"] == seed:
            net = JudgeNet()
            net.load_state_dict(saved["state"])
            return net.eval(), saved["accuracy"]
    net, acc = train_judge(split, epochs, seed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    utils.atomic_torch_save({"state": net.state_dict(), "accuracy": acc, "epochs": epochs, "seed": seed}, cache)
    return net, acc


@torch.no_grad()
def ddpm_samples(path: Path, n: int) -> torch.Tensor:
    import serve  # imported here: only --ddpm needs it

    diffusion = serve.load_model(str(path), path.parent.name, torch.device("cpu")).diffusion
    return torch.cat([diffusion.sample(min(250, n - i)) for i in range(0, n, 250)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_root", type=Path, default=ROOT.parent / "shared/data",
                        help="holds cifar10-cat/train/cat and cifar10-3class/train/{airplane,automobile,bird}")
    parser.add_argument("--cache", type=Path, default=ROOT / "results/judge/judge.pt", help="the trained classifier")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs of the classifier")
    parser.add_argument("--samples", type=int, default=1000, help="generated images per row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ebm", type=Path, action="append", default=[], help="an energy model's model.pt (repeatable)")
    parser.add_argument("--ddpm", type=Path, action="append", default=[], help="a Part 1 diffusion model.pt (repeatable)")
    parser.add_argument("--sample_steps", type=int, nargs="*", default=[],
                        help="also score the EBMs' sample() with these numbers of Langevin steps (the checkpoint's: always)")
    parser.add_argument("--weights", choices=["ema", "live"], default="ema",
                        help="the energy model's EMA weights (what the trainer's grids use) or the trained weights themselves")
    parser.add_argument("--grid", type=Path, help="also write the first 64 images of every model row side by side here")
    args = parser.parse_args(argv)
    for flag, paths in (("--ebm", args.ebm), ("--ddpm", args.ddpm)):
        for path in paths:
            if not path.is_file():
                raise utils.UserError(f"{flag} {path}: no such checkpoint; pass a model.pt written by main.py")
    split = load_split(args.data_root, args.seed)
    net, acc = load_or_train(split, args.cache, args.epochs, args.seed)
    print(f"judge: {args.cache}, held-out accuracy {acc:.3f} on {HELD_OUT} images of each of {', '.join(CLASSES)}")

    metric = fid.make_fid_metric(feature=JudgeFeatures(net))
    fid.load_real_statistics(metric, split["cat"][1], args.cache.with_name("held_out_cats.pt"))
    torch.manual_seed(args.seed)
    n = args.samples
    train_cats = split["cat"][0][:n].float() / 255
    rows = {
        "real training cats (floor)": train_cats,
        "real training cats blurred, sigma 1": TF.gaussian_blur(train_cats, 5, 1.0),
        "real training cats blurred, sigma 2": TF.gaussian_blur(train_cats, 9, 2.0),
        "held-out airplanes": split["airplane"][1][:n].float() / 255,
        "held-out birds": split["bird"][1][:n].float() / 255,
        "uniform noise": torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(args.seed)),
    }
    grid = []
    for path in args.ebm:
        model = load_energy_model(path, use_ema=args.weights == "ema")
        step = torch.load(path, map_location="cpu", weights_only=True)["step"]
        torch.manual_seed(args.seed)  # each model row draws the same noise, whatever the rows before it
        start = time.time()
        rows[f"EBM {path} (step {step}) sample(), {model.sample_steps} steps"] = images = torch.cat(
            [model.sample(min(250, n - i)) for i in range(0, n, 250)])
        print(f"EBM sample(): {time.time() - start:.0f} s for {n} images", flush=True)
        for steps in args.sample_steps:
            torch.manual_seed(args.seed)
            model.sample_steps = steps
            rows[f"EBM {path} (step {step}) sample(), {steps} steps"] = torch.cat(
                [model.sample(min(250, n - i)) for i in range(0, n, 250)])
        chosen = torch.randperm(len(model.replay), generator=torch.Generator().manual_seed(args.seed))[:n]
        rows[f"EBM {path} (step {step}) replay buffer"] = (model.replay[chosen] + 1) / 2
        grid += [images[:64]]
    for path in args.ddpm:
        step = torch.load(path, map_location="cpu", weights_only=True)["step"]
        torch.manual_seed(args.seed)
        rows[f"DDPM {path} (step {step}) Algorithm 2"] = images = ddpm_samples(path, n)
        grid += [images[:64]]
    print(f"| images ({n} each, against {HELD_OUT} held-out cats) | judge Frechet distance |")
    print("| --- | ---: |")
    for name, images in rows.items():
        batches = [images[i : i + 250].clamp(0, 1) for i in range(0, len(images), 250)]
        print(f"| {name} | {fid.compute_fid(metric, batches):.2f} |", flush=True)
    if args.grid and grid:
        save_image(torch.cat([torch.cat([g, torch.ones(8, *g.shape[1:])]) for g in grid]), str(args.grid), nrow=8)
        print(f"grids side by side (8 columns, a white row between models): {args.grid}")
    return 0


if __name__ == "__main__":
    sys.exit(utils.run_command_line(main))
