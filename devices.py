"""Which device to train and sample on, and in which precision.

    pick_device           --device: auto picks CUDA, then Apple MPS, then the CPU
    check_gpu_supported   stops at once, in one line, when this torch has no kernels for the GPU it
                          found (instead of a raw CUDA error at the first step)
    amp_dtype             --amp: the mixed-precision type for the device (bf16, fp16 or none)
"""

from __future__ import annotations

import warnings

import torch

from utils import UserError


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    """--device: auto picks CUDA (this process's GPU under torchrun), else Apple MPS, else CPU.

    Raises:
        UserError: the device is not there, or this torch has no kernels for its GPU.
    """
    if choice == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda", local_rank)
            check_gpu_supported(device)
            return device
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise UserError(f"--device {choice} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {choice}: no CUDA GPU is visible to torch; use --device auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {choice}: Apple MPS is not available here; use --device auto or cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {choice}: there is no GPU {device.index}, torch sees {torch.cuda.device_count()} "
                        "(numbered from 0)")
    check_gpu_supported(device)
    return device


def check_gpu_supported(device: torch.device, capability: tuple[int, int] | None = None,
                        arch_list: list[str] | None = None, name: str | None = None) -> None:
    """Stop now, in one line, when this torch build has no kernels for the GPU.

    torch.cuda.is_available() is True on a GPU that the wheel was not compiled for (Kaggle's
    P100, sm_60, on current wheels), and the first kernel then fails with a raw "no kernel image
    is available". A cubin for sm_XY runs on GPUs of the same major version with minor >= Y;
    PTX (compute_XY) is compiled by the driver for any GPU with capability >= XY.
    `capability`, `arch_list` and `name` default to the real GPU's (tests pass their own).

    Raises:
        UserError: names the GPU, what this torch supports and what to pick instead.
    """
    if device.type != "cuda":
        return
    capability = capability or torch.cuda.get_device_capability(device)
    arch_list = torch.cuda.get_arch_list() if arch_list is None else arch_list
    if not arch_list:  # a build that does not say (e.g. ROCm): nothing to check against
        return
    device_cc = 10 * capability[0] + capability[1]

    def runs_here(arch: str) -> bool:
        kind, _, number = arch.partition("_")
        code_cc = int(number.rstrip("af"))
        if kind == "compute":
            return code_cc <= device_cc
        return code_cc // 10 == capability[0] and code_cc <= device_cc and (code_cc == device_cc or number.isdigit())

    if any(runs_here(arch) for arch in arch_list):
        return
    name = name or torch.cuda.get_device_name(device)
    raise UserError(
        f"--device {device}: this torch {torch.__version__} has no GPU kernels for the {name} (compute capability "
        f"{capability[0]}.{capability[1]}, sm_{device_cc}); it supports {' '.join(arch_list)}. Pick another GPU "
        "(on Kaggle: Settings > Accelerator > GPU T4 x2, not P100; on Colab: T4), or run with --device cpu")


def amp_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    """--amp (auto, fp16, bf16 or off): bf16 where the GPU has it (Ampere and newer), fp16 on older GPUs
    (T4, with a gradient scaler in the trainer), None (float32) off CUDA."""
    if device.type != "cuda":
        if choice in ("fp16", "bf16"):
            warnings.warn(f"--amp {choice}: mixed precision is used on CUDA only; training in float32 on "
                          f"{device.type}")
        return None
    has_bf16 = torch.cuda.get_device_capability(device)[0] >= 8
    if choice == "bf16" and not has_bf16:
        warnings.warn("--amp bf16: this GPU has no native bfloat16; using fp16 with a gradient scaler")
        return torch.float16
    if choice == "auto":
        return torch.bfloat16 if has_bf16 else torch.float16
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "off": None}[choice]
