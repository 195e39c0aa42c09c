"""Pictures of samples: the sample grid, Part 2's class grid and guidance figure, the denoising strip and GIF.

Every function takes images as float tensors in [0, 1] (the range `sample` returns) and writes
one file; the trainer decides when and where.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] float in [0, 1] -> uint8 in [0, 255], as a PNG would store it."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def save_grid(images: torch.Tensor, path: str | Path) -> None:
    """Save [N, C, H, W] images in [0, 1] as one PNG grid, about square."""
    nrow = max(1, round(images.shape[0] ** 0.5))
    save_image(images.float().cpu(), str(path), nrow=nrow, padding=2)


def save_class_grid(images: torch.Tensor, num_classes: int, path: str | Path) -> None:
    """Save [K * n, C, H, W] images in [0, 1], class-major (n of class 0, then n of class 1, ...): one row per class."""
    save_image(images.float().cpu(), str(path), nrow=images.shape[0] // num_classes, padding=2)


def save_guidance_figure(panels: dict[str, torch.Tensor], class_names: list[str], weights: list[float],
                         path: str | Path, scale: int = 2) -> None:
    """The class-by-guidance figure: one panel per thresholding method, a row per class, a column per w.

    Args:
        panels: method name -> [W, K, n, C, H, W] images in [0, 1]: W weights, K classes, n samples per cell.
        class_names: the K row labels. weights: the W column labels.
        scale: each pixel drawn as scale x scale, so that 32x32 samples are big enough to see.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    text_width = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    gap, margin, line = 8, 6, 16
    label_w = int(max(text_width(name, font=font) for name in class_names)) + 2 * margin
    blocks = []
    for method, images in panels.items():
        cells = [[to_uint8(make_grid(images[w, k].float().cpu(), nrow=images.shape[2], padding=1, pad_value=1.0))
                  for w in range(images.shape[0])] for k in range(images.shape[1])]  # [K][W] of [C, h, w] uint8
        cell_h, cell_w = cells[0][0].shape[1] * scale, cells[0][0].shape[2] * scale
        block = Image.new("RGB", (label_w + len(weights) * (cell_w + gap), 2 * line + len(cells) * (cell_h + gap)), "white")
        draw = ImageDraw.Draw(block)
        draw.text((margin, 2), f"threshold: {method}", fill="black", font=font)
        for w, weight in enumerate(weights):
            label = f"w = {weight:g}"
            draw.text((label_w + w * (cell_w + gap) + (cell_w - text_width(label, font=font)) / 2, line + 2), label,
                      fill="black", font=font)
        for k, name in enumerate(class_names):
            top = 2 * line + k * (cell_h + gap)
            draw.text((margin, top + cell_h / 2 - line / 2), name, fill="black", font=font)
            for w, cell in enumerate(cells[k]):
                picture = Image.fromarray(cell.permute(1, 2, 0).numpy()).resize((cell_w, cell_h), Image.NEAREST)
                block.paste(picture, (label_w + w * (cell_w + gap), top))
        blocks.append(block)
    figure = Image.new("RGB", (max(b.width for b in blocks), sum(b.height + gap for b in blocks) - gap), "white")
    top = 0
    for block in blocks:
        figure.paste(block, (0, top))
        top += block.height + gap
    figure.save(str(path))


def save_denoising(frames: list[torch.Tensor], strip_path: str | Path, gif_path: str | Path, strip_columns: int = 11,
                   gif_width: int = 384) -> None:
    """Save the reverse process x_T ... x_0 of a few samples.

    Args:
        frames: T + 1 tensors [N, C, H, W] in [0, 1]: frames[0] is x_T (noise), frames[-1] x_0.
        strip_path: PNG, one row per sample, `strip_columns` evenly spaced steps left to right.
        gif_path: animated GIF, one frame per step (the samples in an about square grid, enlarged
            to at least `gif_width` pixels), the last frame held.
    """
    from PIL import Image

    picks = torch.linspace(0, len(frames) - 1, min(strip_columns, len(frames))).round().long().tolist()
    strip = torch.stack([frames[i].float().cpu() for i in picks], dim=1)  # [N, columns, C, H, W]
    save_image(strip.flatten(0, 1), str(strip_path), nrow=len(picks), padding=2)

    pictures = []
    nrow = math.ceil(frames[0].shape[0] ** 0.5)  # about square, like the sample grid
    for frame in frames:
        grid = make_grid(frame.float().cpu(), nrow=nrow, padding=2)
        picture = Image.fromarray(to_uint8(grid).permute(1, 2, 0).numpy())
        scale = max(1, math.ceil(gif_width / picture.width))  # 32x32 tiles are too small to watch
        pictures.append(picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST))
    durations = [60] * (len(pictures) - 1) + [1500]
    pictures[0].save(str(gif_path), save_all=True, append_images=pictures[1:], duration=durations, loop=0)
