"""Train a DDPM (or Part 3's energy-based model) from the command line: `python main.py --help` lists every flag.

    python main.py --train_steps 300                    # the built-in demo set, a few minutes on a CPU
    python main.py --data_path data/cifar10/train --data_class cat --fid --visualize
    python main.py --model ebm --data_path data/cifar10/train   # Part 3: the energy-based model
    python main.py ... --load_path results/model.pt --eval_only --fid   # grids and FID of a checkpoint, no training
    torchrun --nproc_per_node=2 main.py ...             # the same on 2 GPUs
    python main.py --class_cond --train_steps 300       # Part 2: one label per class (the demo set's shapes)
    python main.py --class_cond --data_path data/cifar10/train --classes airplane automobile bird

Before training, the model's loss and a 2-image sample run once on the device: a device or
shape mistake in diffusion.py stops the run within seconds, in one line naming the function.

Outputs go to --save_folder (./results/): model.pt (the latest checkpoint), sample-<step>.png,
denoising-<step>.png and .gif (--visualize), log.csv (loss, steps/s, FID). With --class_cond:
sample-w<w>-<step>.png (a row per class, a grid per --guidance weight) and guidance-<step>.png
(classes by weights, a panel per --threshold method).
Bad input ends with one line `error: ...` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import signal
import sys
import tempfile
import warnings
from pathlib import Path

if __name__ == "__main__":
    # A run started in the background (nohup, `&`) inherits SIGINT ignored: restore Ctrl-C before the
    # slow imports below, so that an interrupt during them is not lost.
    signal.signal(signal.SIGINT, signal.default_int_handler)

try:
    import torch
    from torch import nn

    from diffusion import GaussianDiffusion
    from trainer import FitResult, Status, TrainConfig, Trainer
    from utils import CommandLineParser, UserError, run_command_line
except KeyboardInterrupt:  # Ctrl-C while torch loads: one line, not an import traceback
    print("interrupted before training started; nothing was saved", file=sys.stderr)
    sys.exit(130)

# The functions of diffusion.py that the homework asks for, in the order test_diffusion.py checks them.
HOMEWORK_FUNCTIONS = ("q_sample", "p_losses", "forward", "p_sample", "p_sample_loop", "sample")


def build_parser() -> argparse.ArgumentParser:
    p = CommandLineParser(prog="main.py", description="Train a denoising diffusion model (DDPM), or with --model ebm "
                          "an energy-based model, and sample from it.",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    on_off = argparse.BooleanOptionalAction
    d = TrainConfig()  # the defaults live there, beside the fields
    data = p.add_argument_group("data")
    data.add_argument("--data_path", default=d.data_path,
                      help="folder holding one subfolder per class; without it, the built-in demo set is used")
    data.add_argument("--data_class", default=d.data_class, help="images are read from data_path/data_class/ (jpg, png, webp)")
    data.add_argument("--image_size", type=int, default=d.image_size, help="images are resized and centre-cropped to this")
    data.add_argument("--dataloader_workers", type=int, default=d.dataloader_workers,
                      help="DataLoader worker processes, used with --no-data_on_device")
    data.add_argument("--demo_images", type=int, default=d.demo_images, help="size of the built-in demo set")

    model = p.add_argument_group("model and training")
    model.add_argument("--model", choices=["diffusion", "ebm"], default=d.model,
                       help="what to train: the DDPM (Parts 1 and 2) or the energy-based model (Part 3)")
    model.add_argument("--time_steps", type=int, default=d.time_steps, help="T, the number of diffusion steps")
    model.add_argument("--unet_dim", type=int, default=d.unet_dim, help="U-Net channels at the finest level")
    model.add_argument("--unet_dim_mults", type=int, nargs="*", default=d.unet_dim_mults,
                       help="channel multiplier per U-Net level; each level after the first halves the image")
    model.add_argument("--batch_size", type=int, default=d.batch_size,
                       help="images per optimizer step, all processes together (torchrun splits it)")
    model.add_argument("--learning_rate", type=float, default=d.learning_rate, help="Adam's learning rate")
    model.add_argument("--train_steps", type=int, default=d.train_steps, help="optimizer steps in total (a resumed run counts on)")
    model.add_argument("--grad_clip", type=float, default=d.grad_clip, help="clip the gradient norm to this")
    model.add_argument("--ema_decay", type=float, default=d.ema_decay,
                       help="decay of the exponential moving average of the weights, which makes the samples "
                            "(default: 0.995, and 0.999 for --model ebm)")
    model.add_argument("--seed", type=int, default=d.seed, help="random seed (each torchrun process adds its rank)")

    ebm = p.add_argument_group("energy-based model (--model ebm; energy.py explains each)")
    ebm.add_argument("--energy_dim", type=int, default=d.energy_dim, help="channels of EnergyNet's first convolution")
    ebm.add_argument("--langevin_steps", type=int, default=d.langevin_steps, help="K, Langevin steps per training batch")
    ebm.add_argument("--step_size", type=float, default=d.step_size, help="Langevin step size on -dE/dx")
    ebm.add_argument("--noise_scale", type=float, default=d.noise_scale, help="std of the noise added at each Langevin step")
    ebm.add_argument("--alpha", type=float, default=d.alpha, help="weight of the regulariser alpha (E_real^2 + E_fake^2)")
    ebm.add_argument("--buffer_size", type=int, default=d.buffer_size, help="samples kept in the replay buffer")
    ebm.add_argument("--reinit_prob", type=float, default=d.reinit_prob,
                     help="share of training chains that restart from fresh noise instead of the buffer")
    ebm.add_argument("--sample_steps", type=int, default=d.sample_steps,
                     help="Langevin steps from noise for sample grids and FID")

    out = p.add_argument_group("outputs")
    out.add_argument("--save_and_sample_every", type=int, default=d.save_and_sample_every,
                     help="every this many steps: checkpoint, sample grid, FID and a log line")
    out.add_argument("--save_folder", default=d.save_folder, help="where model.pt, sample-<step>.png, ... go")
    out.add_argument("--load_path", default=d.load_path, help="a model.pt to resume from (same architecture flags)")
    out.add_argument("--num_samples", type=int, default=d.num_samples, help="images in each sample grid")
    out.add_argument("--visualize", action="store_true",
                     help="also save the reverse process x_T..x_0 as denoising-<step>.png (strip) and .gif")
    out.add_argument("--visualize_samples", type=int, default=d.visualize_samples, help="samples shown by --visualize")
    out.add_argument("--eval_only", action="store_true",
                     help="no training: load --load_path, write its sample grid (with --visualize the denoising "
                          "strip, with --fid its FID), then exit")
    out.add_argument("--fid", action="store_true", help="compute FID against the training images at every save")
    out.add_argument("--fid_samples", type=int, default=d.fid_samples, help="generated images per FID")
    out.add_argument("--fid_weights", default=d.fid_weights,
                     help="a local copy of the Inception weights for --fid (otherwise downloaded once)")
    out.add_argument("--sample_batch_size", type=int, default=d.sample_batch_size, help="images sampled at once (grids and FID)")
    out.add_argument("--sampler", choices=["ancestral", "ddim"], default=d.sampler,
                     help="sampler for grids and FID: ancestral (Algorithm 2, all T steps) or ddim (fast, ddim.py)")
    out.add_argument("--sampling_steps", type=int, default=d.sampling_steps,
                     help="ddim's steps, 1..T (default T); the ancestral sampler always runs T")
    out.add_argument("--ddim_eta", type=float, default=d.ddim_eta,
                     help="ddim's noise: 0 deterministic, 1 the ancestral sampler's variance")
    out.add_argument("--log_every", type=int, default=d.log_every,
                     help="read the loss back from the device every this many steps (progress bar, NaN check)")
    out.add_argument("--wandb", action=on_off, default=d.wandb,
                     help="log to Weights & Biases (default: on if WANDB_PROJECT or WANDB_MODE=online is set); "
                          "offline when not logged in")

    speed = p.add_argument_group("device and speed")
    speed.add_argument("--device", default=d.device, help="auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps")
    speed.add_argument("--amp", choices=["auto", "fp16", "bf16", "off"], default=d.amp,
                       help="mixed precision on CUDA: auto = bf16 where the GPU supports it, else fp16 with a "
                            "gradient scaler; always off on CPU and MPS")
    speed.add_argument("--channels_last", action=on_off, default=d.channels_last,
                       help="channels-last memory layout (default: on for the CPU, where it is faster; off on GPUs, "
                            "where it is unmeasured for this model)")
    speed.add_argument("--compile", action=on_off, default=d.compile,
                       help="torch.compile the training step (slow first step; falls back if it fails)")
    speed.add_argument("--data_on_device", action=on_off, default=d.data_on_device,
                       help="keep the whole uint8 data set on the device and draw and augment batches there")
    speed.add_argument("--fused_optimizer", action=on_off, default=d.fused_optimizer,
                       help="fused Adam kernel (default: on for CUDA)")

    part2 = p.add_argument_group("Part 2: class-conditional model with classifier-free guidance")
    part2.add_argument("--class_cond", action="store_true",
                       help="train on every class folder under --data_path, labels in sorted folder order "
                            "(without --data_path: the demo set's shapes circle, diamond, square)")
    part2.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                       help="with --class_cond: train on these class folders only (default: all of them)")
    part2.add_argument("--p_uncond", type=float, default=None,
                       help=f"with --class_cond: probability of replacing a label by the null label (default {d.p_uncond})")
    part2.add_argument("--guidance", type=float, nargs="+", default=None, metavar="W",
                       help="with --class_cond: guidance weights w, one grid each and a column each of the "
                            f"guidance figure; the first also for FID (default {' '.join(f'{w:g}' for w in d.guidance)})")
    part2.add_argument("--threshold", nargs="+", default=None, choices=THRESHOLDS, metavar="METHOD",
                       help="with --class_cond: thresholding of x0-hat when sampling, none, static or dynamic; a panel "
                            f"each in the guidance figure, the first for the grids and FID (default {' '.join(d.threshold)})")
    part2.add_argument("--sample_classes", nargs="+", default=None, metavar="NAME",
                       help="with --class_cond: the classes sampled, a row each (default: all)")
    return p


THRESHOLDS = ("none", "static", "dynamic")
PART2_FLAGS = ("classes", "p_uncond", "guidance", "threshold", "sample_classes")


def check_part2_flags(args: argparse.Namespace) -> None:
    """Part 2's flags need --class_cond; without them given, they take TrainConfig's defaults."""
    given = [name for name in PART2_FLAGS if getattr(args, name) is not None]
    if not args.class_cond:
        if given:
            raise UserError(f"--{given[0]} needs --class_cond (it applies to the class-conditional model of Part 2)")
        return
    defaults = TrainConfig()
    for name in PART2_FLAGS:
        if getattr(args, name) is None:
            setattr(args, name, getattr(defaults, name))
    if not 0 <= args.p_uncond < 1:
        raise UserError(f"--p_uncond must be in [0, 1), got {args.p_uncond}; the homework uses 0.1")
    bad = [w for w in args.guidance if not 0 <= w < float("inf")]
    if bad:
        raise UserError(f"--guidance weights must be 0 or more, got {bad[0]:g}; e.g. --guidance 0 0.5 1 2 5")
    if args.p_uncond == 0 and any(w != 0 for w in args.guidance):
        raise UserError("--p_uncond 0 never trains the unconditional prediction that guidance w > 0 needs: "
                        "use --p_uncond 0.1, or --guidance 0")
    if args.classes is not None and args.data_path is None:
        raise UserError("--classes needs --data_path; the demo set's classes are all used")


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
    multiple = 2 ** (len(args.unet_dim_mults) - 1) if args.model == "diffusion" else 1  # EnergyNet takes any size
    if args.image_size < 1 or args.image_size % multiple:
        raise UserError(f"--image_size {args.image_size} must be a positive multiple of {multiple} = 2^(levels - 1) "
                        f"for the {len(args.unet_dim_mults)} levels of --unet_dim_mults; use e.g. "
                        f"--image_size {max(multiple, args.image_size // multiple * multiple)} or fewer levels")
    if not args.learning_rate > 0:
        raise UserError(f"--learning_rate must be positive, got {args.learning_rate}; the homework uses 1e-3")
    if args.train_steps < 0:
        raise UserError(f"--train_steps must be 0 or more, got {args.train_steps}")
    if args.ema_decay is not None and not 0 <= args.ema_decay < 1:
        raise UserError(f"--ema_decay must be in [0, 1), got {args.ema_decay}; e.g. 0.995")
    if not args.grad_clip > 0:
        raise UserError(f"--grad_clip must be positive, got {args.grad_clip}")
    if args.dataloader_workers < 0:
        raise UserError(f"--dataloader_workers must be 0 or more, got {args.dataloader_workers}")
    steps = args.sampling_steps
    if steps is not None and args.sampler == "ancestral" and steps != args.time_steps:
        raise UserError(f"--sampling_steps {steps}: the ancestral sampler runs all --time_steps {args.time_steps}; "
                        "add --sampler ddim to sample in fewer steps")
    if steps is not None and not 1 <= steps <= args.time_steps:
        raise UserError(f"--sampling_steps must be between 1 and --time_steps {args.time_steps}, got {steps}")
    if not 0 <= args.ddim_eta <= 1:
        raise UserError(f"--ddim_eta must be between 0 and 1, got {args.ddim_eta}")
    if args.model == "ebm":
        _check_energy_flags(args)
    if args.fid and args.fid_samples < 2:
        raise UserError(f"--fid_samples must be at least 2 for FID, got {args.fid_samples}")
    if args.eval_only and not args.load_path:
        raise UserError("--eval_only needs --load_path: the model.pt to evaluate (e.g. --load_path results/model.pt)")
    check_part2_flags(args)
    return args


def _check_energy_flags(args: argparse.Namespace) -> None:
    if args.class_cond:
        raise UserError("--class_cond trains the conditional diffusion model (Part 2); it does not apply to --model ebm")
    for name in ("energy_dim", "langevin_steps", "sample_steps"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not 0 < args.step_size < float("inf"):
        raise UserError(f"--step_size must be positive, got {args.step_size}; the default is 10")
    if not 0 <= args.noise_scale < float("inf"):
        raise UserError(f"--noise_scale must be 0 or more, got {args.noise_scale}; the default is 0.005")
    if not 0 <= args.reinit_prob <= 1:
        raise UserError(f"--reinit_prob must be between 0 and 1, got {args.reinit_prob}; the default is {TrainConfig.reinit_prob}")
    if not 0 <= args.alpha < float("inf"):
        raise UserError(f"--alpha must be 0 or more, got {args.alpha}; the default is 0.1")
    if args.buffer_size < args.batch_size:
        raise UserError(f"--buffer_size {args.buffer_size} must be at least --batch_size {args.batch_size}: each batch "
                        "continues that many distinct chains from the buffer")


def check_save_folder(folder: str) -> None:
    """Fail now, not at the first checkpoint, if --save_folder cannot be written."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UserError(f"--save_folder {folder} is not writable ({error.strerror}): choose another folder") from None


class _ZeroNoisePredictor(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return torch.zeros_like(x)


# Each part's homework functions (in its tests' order), the file that holds them and the tests that check them.
PART_FUNCTIONS = {
    "diffusion": (HOMEWORK_FUNCTIONS, "diffusion.py", "test_diffusion.py"),
    "conditional": (("drop_labels", "p_losses", "forward", "guided_noise", "threshold", "p_sample", "p_sample_loop",
                     "sample"), "diffusion.py", "test_conditional.py"),
    "ebm": (("langevin_step", "langevin_sample", "loss", "sample_buffer", "update_buffer", "forward", "sample"),
            "energy.py", "test_energy.py"),
}


def _probe_calls(part: str) -> dict:
    """One call of each of the part's functions on a toy model (4x4 or 8x8 images, 2 steps)."""
    x, t = torch.zeros(1, 3, 4, 4), torch.zeros(1, dtype=torch.long)
    if part == "diffusion":
        toy = GaussianDiffusion(_ZeroNoisePredictor(), image_size=4, channels=3, timesteps=2)
        return {"q_sample": lambda: toy.q_sample(x, t, x), "p_losses": lambda: toy.p_losses(x, t, x),
                "forward": lambda: toy(x), "p_sample": lambda: toy.p_sample(x, t, 0),
                "p_sample_loop": lambda: toy.p_sample_loop(x), "sample": lambda: toy.sample(1)}
    if part == "conditional":
        from diffusion import ConditionalGaussianDiffusion

        toy = ConditionalGaussianDiffusion(_ZeroNoisePredictor(), image_size=4, num_classes=2, channels=3, timesteps=2)
        y = torch.zeros(1, dtype=torch.long)
        return {"drop_labels": lambda: toy.drop_labels(y), "p_losses": lambda: toy.p_losses(x, t, x, y),
                "forward": lambda: toy(x, y), "guided_noise": lambda: toy.guided_noise(x, t, y, 1.0),
                "threshold": lambda: toy.threshold(x, "dynamic"), "p_sample": lambda: toy.p_sample(x, t, 0, y),
                "p_sample_loop": lambda: toy.p_sample_loop(x, y), "sample": lambda: toy.sample([0])}
    from energy import EnergyModel, EnergyNet

    toy = EnergyModel(EnergyNet(3, 4), image_size=8, langevin_steps=1, buffer_size=4, sample_steps=1)
    images = torch.zeros(2, 3, 8, 8)
    return {"langevin_step": lambda: toy.langevin_step(images), "langevin_sample": lambda: toy.langevin_sample(images, 1),
            "loss": lambda: toy.loss(images, images), "sample_buffer": lambda: toy.sample_buffer(2),
            "update_buffer": lambda: toy.update_buffer(images, torch.tensor([0, 1])), "forward": lambda: toy(images),
            "sample": lambda: toy.sample(2)}


def unwritten_functions(part: str = "diffusion") -> list[str]:
    """The homework functions of `part` (diffusion, conditional or ebm) that still raise NotImplementedError.

    Calls each one on a toy model: a stub raises NotImplementedError naming itself, and a written
    function that calls a stub names that stub. Other errors are left to the part's tests.
    """
    functions = PART_FUNCTIONS[part][0]
    unwritten = set()
    with torch.random.fork_rng(devices=[]):  # the probe must not move the training run's random stream
        for name, call in _probe_calls(part).items():
            try:
                call()
            except NotImplementedError as error:
                named = str(error).split(":")[0]
                unwritten.add(named if named in functions else name)
            except Exception:  # noqa: BLE001 (a written function's bugs are for the part's tests to report)
                pass
    return [name for name in functions if name in unwritten]


def unwritten_message(names: list[str], part: str = "diffusion") -> str:
    """One line naming the unwritten functions and the command that checks them."""
    functions, source, tests = PART_FUNCTIONS[part]
    listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
    verb, them = ("are", "them") if len(names) > 1 else ("is", "it")
    where = f"{source} (Part 2)" if part == "conditional" else source
    return (f"{where}: {listed} {verb} not written yet; write {them} first and check with "
            f"`pytest {tests}` (training needs all {len(functions)})")


def trainer_class(model: str, class_cond: bool) -> type[Trainer]:
    """The Trainer for --model and --class_cond; a part that this handout leaves out is a UserError."""
    if model == "ebm":
        try:  # imported here: a handout without Part 3 has no energy.py
            from energy_trainer import EnergyTrainer
        except ModuleNotFoundError as error:
            raise UserError(f"--model ebm: {error.name}.py (Part 3) is not in this folder; train with --model diffusion, "
                            "or get Part 3's files") from None
        return EnergyTrainer
    if class_cond:
        try:  # imported here: a handout without Part 2 has no ConditionalGaussianDiffusion
            from conditional_trainer import ConditionalTrainer
        except ImportError:
            raise UserError("--class_cond: Part 2 (ConditionalGaussianDiffusion in diffusion.py) is not in this "
                            "handout; train without --class_cond, or get Part 2's files") from None
        return ConditionalTrainer
    return Trainer


def build_trainer(args: argparse.Namespace) -> Trainer:
    """The Trainer for these parsed flags, exactly as main() builds it (TrainConfig's fields are flag names)."""
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    return trainer_class(config.model, config.class_cond)(config)


def resume_command(argv: list[str], checkpoint: Path, world_size: int) -> str:
    """The command that continues this run from `checkpoint`: the same flags, --load_path replaced."""
    argv = list(argv)
    for i, arg in enumerate(argv):  # drop an old --load_path and its value
        if arg == "--load_path":
            del argv[i : i + 2]
            break
        if arg.startswith("--load_path="):
            del argv[i]
            break
    launcher = ["python"] if world_size == 1 else ["torchrun", f"--nproc_per_node={world_size}"]
    return shlex.join([*launcher, "main.py", *argv, "--load_path", str(checkpoint)])


# A file that cannot be written (a full disk, a dropped mount) is the user's to fix, like bad input: 2.
EXIT_CODES = {Status.DONE: 0, Status.NONFINITE: 1, Status.INTERRUPTED: 130, Status.WRITE_FAILED: 2}


def report(result: FitResult, argv: list[str], world_size: int) -> None:
    """Tell the user how training ended, if it ended early."""
    if result.status is Status.NONFINITE:
        kept = (f"the last good checkpoint is {result.checkpoint}; resume from it with a lower --learning_rate: "
                f"{resume_command(argv, result.checkpoint, world_size)}") if result.checkpoint else \
            "no checkpoint had been written yet"
        print(f"error: the loss became {result.loss} (NaN or infinite) by step {result.step}; stopped without saving. "
              f"{kept}", file=sys.stderr)
    elif result.status is Status.WRITE_FAILED:
        then = (f": when the folder is writable again, resume with {resume_command(argv, result.checkpoint, world_size)}"
                if result.checkpoint else "")
        print(f"error: {result.message}; stopped at step {result.step}{then}", file=sys.stderr)
    elif result.status is Status.INTERRUPTED and result.checkpoint is None:
        print(f"\ninterrupted at step {result.step}; nothing was saved", file=sys.stderr)
    elif result.status is Status.INTERRUPTED:
        print(f"\ninterrupted at step {result.step}; saved {result.checkpoint}. Resume with:\n  "
              f"{resume_command(argv, result.checkpoint, world_size)}", file=sys.stderr)


def train(argv: list[str]) -> int:
    """Parse the flags, train, report how it ended; returns the exit code. Raises UserError."""
    trainer = None
    try:
        args = parse_args(argv)
        trainer_class(args.model, args.class_cond)  # a part missing from this handout says so first
        part = "ebm" if args.model == "ebm" else "conditional" if args.class_cond else "diffusion"
        unwritten = unwritten_functions(part)
        if unwritten:
            raise UserError(unwritten_message(unwritten, part))
        check_save_folder(args.save_folder)
        trainer = build_trainer(args)
        trainer.check_model()  # a device or shape bug in the model fails here, in seconds
        if args.eval_only:
            trainer.evaluate()
            return 0
        result = trainer.fit()
        if trainer.is_main:  # under torchrun, rank 0 speaks for all
            report(result, argv, trainer.world_size)
        return EXIT_CODES[result.status]
    except NotImplementedError as error:  # a stub that the start-up probe did not reach
        raise UserError(f"diffusion.py: {error}; write it and check it with `pytest test_diffusion.py`") from None
    except KeyboardInterrupt:  # during start-up (Trainer.fit handles it during training)
        print("interrupted before training started; nothing was saved", file=sys.stderr)
        return 130
    finally:
        if trainer is not None:
            trainer.close()


def main(argv: list[str] | None = None) -> int:
    """The command line: returns the exit code (0 done, 1 NaN loss, 2 bad input or an unwritable file, 130 Ctrl-C)."""
    return run_command_line(train, sys.argv[1:] if argv is None else list(argv))


def _short_warning(message, category, filename, lineno, file=None, line=None):
    (file or sys.stderr).write(f"warning: {message}\n")


def _stop_like_ctrl_c(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    # A notebook or a job scheduler stops with SIGTERM: save and print the resume command, as for Ctrl-C.
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    warnings.showwarning = _short_warning  # our warnings are for the user: one line, no source location
    if os.environ.get("RANK", "0") != "0":
        warnings.simplefilter("ignore")  # under torchrun, rank 0 speaks for all
    sys.exit(main())
