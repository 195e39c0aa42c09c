"""The settings of one training run: `TrainConfig`, one field per flag of main.py, with the same name.

`python main.py --help` explains each flag. A field that fixes the network's shape (see
checkpoints.ARCHITECTURE_FIELDS) must match when a checkpoint is loaded; the others may change
between runs (a lower learning rate to go on after a divergence, more steps, another sampler).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs; main.py's flags have the same names (`python main.py --help` explains each)."""

    # data
    data_path: str | None = None  # folder with one subfolder per class; None: the built-in demo set
    data_class: str = "cat"
    image_size: int = 32
    dataloader_workers: int = 0
    demo_images: int = 4096
    # model and training
    time_steps: int = 50
    unet_dim: int = 16
    unet_dim_mults: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 4, 8])
    batch_size: int = 32
    learning_rate: float = 1e-3
    train_steps: int = 10000
    grad_clip: float = 1.0
    ema_decay: float | None = None  # None: the trainer's own (Trainer.ema_decay)
    seed: int = 0
    # outputs
    save_and_sample_every: int = 1000
    save_folder: str = "./results/"
    load_path: str | None = None
    num_samples: int = 25
    visualize: bool = False
    visualize_samples: int = 8
    fid: bool = False
    fid_samples: int = 1000
    fid_weights: str | None = None
    sample_batch_size: int = 250
    sampler: str = "ancestral"  # or "ddim" (ddim.py), for grids and FID
    sampling_steps: int | None = None  # ddim's steps; None: all T
    ddim_eta: float = 0.0
    log_every: int = 25
    wandb: bool | None = None  # None: on if WANDB_PROJECT or WANDB_MODE=online is set
    # device and speed
    device: str = "auto"
    amp: str = "auto"  # auto, fp16, bf16 or off
    channels_last: bool | None = None  # None: on for the CPU (measured), off on GPUs (unmeasured there)
    compile: bool = False
    data_on_device: bool = True
    fused_optimizer: bool | None = None  # None: on for CUDA
    # Part 2: class-conditional training with classifier-free guidance (ConditionalTrainer)
    class_cond: bool = False
    classes: list[str] | None = None  # the class folders to train on; None: every folder under data_path
    p_uncond: float = 0.1
    guidance: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 5.0])
    threshold: list[str] = dataclasses.field(default_factory=lambda: ["static", "dynamic", "none"])
    sample_classes: list[str] | None = None  # the rows of the sample grids; None: every class
    # which model: "diffusion" (Parts 1 and 2) or "ebm" (Part 3, trained by energy_trainer.EnergyTrainer)
    model: str = "diffusion"
    # the energy-based model (model = "ebm"); energy.py's EnergyModel explains each
    energy_dim: int = 16
    step_size: float = 10.0
    noise_scale: float = 0.005
    langevin_steps: int = 10
    alpha: float = 0.1
    buffer_size: int = 2048
    reinit_prob: float = 0.3
    sample_steps: int = 60
