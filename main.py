"""Train a DDPM from the command line: `python main.py --help` lists every flag.

    python main.py --train_steps 300                    # the built-in demo set, a few minutes on a CPU
    python main.py --data_path data/cifar10/train --data_class cat --fid --visualize
    torchrun --nproc_per_node=2 main.py ...             # the same on 2 GPUs

Outputs go to --save_folder (./results/): model.pt (the latest checkpoint), sample-<step>.png,
denoising-<step>.png and .gif (--visualize), log.csv (loss, steps/s, FID).
Bad input ends with one line `error: ...` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

from trainer import Trainer
from utils import CommandLineParser, UserError


def build_parser() -> argparse.ArgumentParser:
    p = CommandLineParser(prog="main.py", description="Train a denoising diffusion model (DDPM) and sample from it.",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    on_off = argparse.BooleanOptionalAction
    data = p.add_argument_group("data")
    data.add_argument("--data_path", default=None,
                      help="folder holding one subfolder per class; without it, the built-in demo set is used")
    data.add_argument("--data_class", default="cat", help="images are read from data_path/data_class/ (jpg, png, webp)")
    data.add_argument("--image_size", type=int, default=32, help="images are resized and centre-cropped to this")
    data.add_argument("--dataloader_workers", type=int, default=0,
                      help="DataLoader worker processes, used with --no-data_on_device")
    data.add_argument("--demo_images", type=int, default=4096, help="size of the built-in demo set")

    model = p.add_argument_group("model and training")
    model.add_argument("--time_steps", type=int, default=50, help="T, the number of diffusion steps")
    model.add_argument("--unet_dim", type=int, default=16, help="U-Net channels at the finest level")
    model.add_argument("--unet_dim_mults", type=int, nargs="*", default=[1, 2, 4, 8],
                       help="channel multiplier per U-Net level; each level after the first halves the image")
    model.add_argument("--batch_size", type=int, default=32,
                       help="images per optimizer step, all processes together (torchrun splits it)")
    model.add_argument("--learning_rate", type=float, default=1e-3, help="Adam's learning rate")
    model.add_argument("--train_steps", type=int, default=10000, help="optimizer steps in total (a resumed run counts on)")
    model.add_argument("--grad_clip", type=float, default=1.0, help="clip the gradient norm to this")
    model.add_argument("--ema_decay", type=float, default=0.995,
                       help="decay of the exponential moving average of the weights, which makes the samples")
    model.add_argument("--seed", type=int, default=0, help="random seed (each torchrun process adds its rank)")

    out = p.add_argument_group("outputs")
    out.add_argument("--save_and_sample_every", type=int, default=1000,
                     help="every this many steps: checkpoint, sample grid, FID and a log line")
    out.add_argument("--save_folder", default="./results/", help="where model.pt, sample-<step>.png, ... go")
    out.add_argument("--load_path", default=None, help="a model.pt to resume from (same architecture flags)")
    out.add_argument("--num_samples", type=int, default=25, help="images in each sample grid")
    out.add_argument("--visualize", action="store_true",
                     help="also save the reverse process x_T..x_0 as denoising-<step>.png (strip) and .gif")
    out.add_argument("--visualize_samples", type=int, default=8, help="samples shown by --visualize")
    out.add_argument("--fid", action="store_true", help="compute FID against the training images at every save")
    out.add_argument("--fid_samples", type=int, default=1000, help="generated images per FID")
    out.add_argument("--fid_weights", default=None,
                     help="a local copy of the Inception weights for --fid (otherwise downloaded once)")
    out.add_argument("--sample_batch_size", type=int, default=250, help="images sampled at once (grids and FID)")
    out.add_argument("--log_every", type=int, default=25,
                     help="read the loss back from the device every this many steps (progress bar, NaN check)")
    out.add_argument("--wandb", action=on_off, default=None,
                     help="log to Weights & Biases (default: on if WANDB_PROJECT or WANDB_MODE=online is set); "
                          "offline when not logged in")

    speed = p.add_argument_group("device and speed")
    speed.add_argument("--device", default="auto", help="auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps")
    speed.add_argument("--amp", choices=["auto", "fp16", "bf16", "off"], default="auto",
                       help="mixed precision on CUDA: auto = bf16 where the GPU supports it, else fp16 with a "
                            "gradient scaler; always off on CPU and MPS")
    speed.add_argument("--channels_last", action=on_off, default=True,
                       help="channels-last memory layout (faster convolutions on CPUs and tensor-core GPUs)")
    speed.add_argument("--compile", action=on_off, default=False,
                       help="torch.compile the training step (slow first step; falls back if it fails)")
    speed.add_argument("--data_on_device", action=on_off, default=True,
                       help="keep the whole uint8 data set on the device and draw and augment batches there")
    speed.add_argument("--fused_optimizer", action=on_off, default=None,
                       help="fused Adam kernel (default: on for CUDA)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the flags' values (no files are touched). Raises UserError."""
    args = build_parser().parse_args(argv)
    positive = ["time_steps", "batch_size", "unet_dim", "save_and_sample_every", "num_samples", "visualize_samples",
                "sample_batch_size", "log_every", "demo_images"]
    for name in positive:
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not args.unet_dim_mults or any(m < 1 for m in args.unet_dim_mults):
        raise UserError(f"--unet_dim_mults needs one positive integer per U-Net level, e.g. --unet_dim_mults 1 2 4 8; "
                        f"got {args.unet_dim_mults or 'none'}")
    multiple = 2 ** (len(args.unet_dim_mults) - 1)
    if args.image_size < 1 or args.image_size % multiple:
        raise UserError(f"--image_size {args.image_size} must be a positive multiple of {multiple} = 2^(levels - 1) "
                        f"for the {len(args.unet_dim_mults)} levels of --unet_dim_mults; use e.g. "
                        f"--image_size {max(multiple, args.image_size // multiple * multiple)} or fewer levels")
    if not args.learning_rate > 0:
        raise UserError(f"--learning_rate must be positive, got {args.learning_rate}; the homework uses 1e-3")
    if args.train_steps < 0:
        raise UserError(f"--train_steps must be 0 or more, got {args.train_steps}")
    if not 0 <= args.ema_decay < 1:
        raise UserError(f"--ema_decay must be in [0, 1), got {args.ema_decay}; e.g. 0.995")
    if not args.grad_clip > 0:
        raise UserError(f"--grad_clip must be positive, got {args.grad_clip}")
    if args.dataloader_workers < 0:
        raise UserError(f"--dataloader_workers must be 0 or more, got {args.dataloader_workers}")
    if args.fid and args.fid_samples < 2:
        raise UserError(f"--fid_samples must be at least 2 for FID, got {args.fid_samples}")
    return args


def check_save_folder(folder: str) -> None:
    """Fail now, not at the first checkpoint, if --save_folder cannot be written."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UserError(f"--save_folder {folder} is not writable ({error.strerror}): choose another folder") from None


def main(argv: list[str] | None = None) -> int:
    """The command line: returns the exit code (0 done, 1 NaN loss, 2 bad input, 130 Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    trainer = None
    try:
        args = parse_args(argv)
        check_save_folder(args.save_folder)
        trainer = Trainer(args, argv=argv)
        return trainer.fit()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # during start-up (Trainer.fit handles it during training)
        print("interrupted before training started; nothing was saved", file=sys.stderr)
        return 130
    finally:
        if trainer is not None:
            trainer.close()


def _short_warning(message, category, filename, lineno, file=None, line=None):
    (file or sys.stderr).write(f"warning: {message}\n")


if __name__ == "__main__":
    warnings.showwarning = _short_warning  # our warnings are for the user: one line, no source location
    if os.environ.get("RANK", "0") != "0":
        warnings.simplefilter("ignore")  # under torchrun, rank 0 speaks for all
    sys.exit(main())
