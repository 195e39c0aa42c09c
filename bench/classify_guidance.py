"""Does guidance give the class we asked for? A small CNN judges a class-conditional model's samples.

    python bench/classify_guidance.py --data_path ../shared/data/cifar10-3class/train \
        --checkpoint results/model.pt --out /tmp/classify

1. Trains a small CNN on the same class folders the diffusion model was trained on (sorted folder
   order = the checkpoint's labels), holding out --test_fraction of each class, and reports its
   accuracy on the held-out images. Its weights are cached in --out and reused when the data match.
2. Loads the checkpoint's EMA weights, samples --samples_per_class images of every class at each
   guidance weight w (--weights, default 0 1 2 5), all weights from the same starting noise, and
   reports the fraction the classifier assigns to the requested class, per class and overall.

The fractions are only as good as the classifier: read them beside its test accuracy (a perfect
generator would score about that accuracy, not 100%). Results go to --out/classify_guidance.json.
This is a manual quality check for the README, not a test: it needs real images and CPU minutes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grids  # noqa: E402
import training_data  # noqa: E402
import utils  # noqa: E402


class SmallCNN(nn.Module):
    """Three conv blocks (32 -> 16 -> 8 -> 4 pixels) and a linear layer: [B, 3, 32, 32] in [-1, 1] -> [B, K] logits."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                                 nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                                 nn.MaxPool2d(2))

        self.features = nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_classes(data_path: Path, image_size: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Every class folder under data_path in sorted order: (names, [N, 3, S, S] uint8, [N] long labels)."""
    names = sorted(p.name for p in data_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise utils.UserError(f"--data_path {data_path} holds no class folders")
    images = [training_data.load_image_folder(data_path / name, image_size) for name in names]
    labels = torch.cat([torch.full((len(x),), k, dtype=torch.long) for k, x in enumerate(images)])
    return names, torch.cat(images), labels


def split(labels: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, test): --test_fraction of each class held out, drawn with a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for k in labels.unique():
        idx = (labels == k).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = max(1, round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train), torch.cat(test)


def augment(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, S, S] -> flipped (training_data.augment) and shifted by up to 2 pixels (reflection padding)."""
    x = training_data.augment(batch)
    s = x.shape[-1]
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    dx, dy = torch.randint(0, 5, (2,)).tolist()
    return padded[..., dy : dy + s, dx : dx + s]


@torch.no_grad()
def predict(net: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """[N, 3, S, S] float in [-1, 1] -> [N] predicted labels."""
    net.eval()
    return torch.cat([net(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])


def train_classifier(images: torch.Tensor, labels: torch.Tensor, train: torch.Tensor, test: torch.Tensor,
                     num_classes: int, epochs: int, seed: int) -> tuple[SmallCNN, float]:
    """Adam with a one-cycle learning rate; returns the network and its held-out accuracy."""
    torch.manual_seed(seed)
    net = SmallCNN(num_classes)
    batch_size = 128
    steps = epochs * (len(train) // batch_size)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    test_x = images[test].float() / 127.5 - 1
    for epoch in range(epochs):
        net.train()
        order = train[torch.randperm(len(train))]
        total = 0.0
        for i in range(0, len(order) - batch_size + 1, batch_size):
            index = order[i : i + batch_size]
            loss = F.cross_entropy(net(augment(images[index])), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
        accuracy = (predict(net, test_x) == labels[test]).float().mean().item()
        print(f"classifier epoch {epoch + 1}/{epochs}: train loss {total / (len(order) // batch_size):.3f}, "
              f"held-out accuracy {accuracy:.3f}", flush=True)
    return net, accuracy


def load_conditional_model(path: Path):
    """The EMA model of a main.py --class_cond checkpoint: (ConditionalGaussianDiffusion, class_names)."""
    from diffusion import ConditionalGaussianDiffusion
    from unet import Unet

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    args, names = checkpoint["args"], checkpoint.get("class_names")
    if not args.get("class_cond") or not names:
        raise utils.UserError(f"--checkpoint {path} is not class-conditional: train it with main.py --class_cond")
    unet = Unet(dim=args["unet_dim"], dim_mults=tuple(args["unet_dim_mults"]), channels=3, num_classes=len(names))
    model = ConditionalGaussianDiffusion(unet, image_size=args["image_size"], num_classes=len(names),
                                         timesteps=args["time_steps"], p_uncond=args.get("p_uncond", 0.1))
    # AveragedModel's state dict: the model's keys under "module." plus its counter "n_averaged".
    ema = {k.removeprefix("module."): v for k, v in checkpoint["ema"].items() if k.startswith("module.")}
    model.load_state_dict(ema)
    return model.eval(), list(names), checkpoint["step"]


def main() -> None:
    p = utils.CommandLineParser(prog=f"bench/{Path(__file__).name}", description=__doc__.split("\n")[0])
    p.add_argument("--data_path", type=Path, required=True, help="the folder of class folders the model was trained on")
    p.add_argument("--checkpoint", type=Path, default=None, help="a main.py --class_cond model.pt (omit: classifier only)")
    p.add_argument("--out", type=Path, default=Path("results/classify_guidance"), help="JSON, classifier weights, grids")
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0, 2.0, 5.0], help="guidance weights w")
    p.add_argument("--threshold", default="static", choices=["none", "static", "dynamic"])
    p.add_argument("--samples_per_class", type=int, default=100)
    p.add_argument("--sample_batch_size", type=int, default=150)
    p.add_argument("--epochs", type=int, default=6, help="classifier training epochs")
    p.add_argument("--test_fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    names, images, labels = load_classes(args.data_path, 32)
    train, test = split(labels, args.test_fraction, args.seed)
    print(f"classes {names}; {len(train)} training and {len(test)} held-out images", flush=True)
    cache = args.out / "classifier.pt"
    key = {"names": names, "n": len(labels), "epochs": args.epochs, "seed": args.seed, "test_fraction": args.test_fraction}
    start = time.perf_counter()
    if cache.is_file() and (saved := torch.load(cache, weights_only=True))["key"] == key:
        net = SmallCNN(len(names))
        net.load_state_dict(saved["weights"])
        accuracy = saved["accuracy"]
        print(f"classifier: reusing {cache} (held-out accuracy {accuracy:.3f})")
    else:
        net, accuracy = train_classifier(images, labels, train, test, len(names), args.epochs, args.seed)
        utils.atomic_torch_save({"key": key, "weights": net.state_dict(), "accuracy": accuracy}, cache)
    test_x = images[test].float() / 127.5 - 1
    predicted = predict(net, test_x)
    per_class_acc = {n: (predicted[labels[test] == k] == k).float().mean().item() for k, n in enumerate(names)}
    result = {"classes": names, "classifier": {"test_accuracy": accuracy, "per_class": per_class_acc,
                                               "train_images": len(train), "test_images": len(test),
                                               "seconds": round(time.perf_counter() - start, 1)}}
    print(f"classifier held-out accuracy {accuracy:.3f} " + " ".join(f"{n} {a:.3f}" for n, a in per_class_acc.items()))

    if args.checkpoint is not None:
        model, model_names, step = load_conditional_model(args.checkpoint)
        if model_names != names:
            raise utils.UserError(f"--checkpoint knows the classes {model_names}, --data_path holds {names}")
        result.update(checkpoint=str(args.checkpoint), step=step, threshold=args.threshold,
                      samples_per_class=args.samples_per_class, guidance={})
        y = torch.arange(len(names)).repeat_interleave(args.samples_per_class)  # [K * n] requested classes
        for w in args.weights:
            start = time.perf_counter()
            samples = []
            with torch.random.fork_rng():
                torch.manual_seed(args.seed)  # the same starting noise at every w
                with torch.inference_mode():
                    for i in range(0, len(y), args.sample_batch_size):
                        samples.append(model.sample(y[i : i + args.sample_batch_size], w=w, threshold=args.threshold))
            samples = torch.cat(samples)  # [K * n, 3, S, S] in [0, 1]
            grids.save_grid(samples[:: max(1, args.samples_per_class // 8)], args.out / f"samples-w{w:g}.png")
            got = predict(net, samples * 2 - 1)
            per_class = {n: (got[y == k] == k).float().mean().item() for k, n in enumerate(names)}
            overall = (got == y).float().mean().item()
            result["guidance"][f"{w:g}"] = {"fraction_requested_class": overall, "per_class": per_class,
                                           "predicted_counts": torch.bincount(got, minlength=len(names)).tolist(),
                                           "sampling_seconds": round(time.perf_counter() - start, 1)}
            print(f"w = {w:g}: {overall:.3f} of the samples are classified as the requested class ("
                  + ", ".join(f"{n} {f:.2f}" for n, f in per_class.items()) + f"), {time.perf_counter() - start:.0f} s",
                  flush=True)
    (args.out / "classify_guidance.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out / 'classify_guidance.json'}")


if __name__ == "__main__":
    sys.exit(utils.run_command_line(main))
