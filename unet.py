"""The provided noise-prediction network: a small multi-scale U-Net.

    x [B, C, H, W], t [B] long  ->  eps_hat [B, C, H, W]
    x [B, C, H, W], t [B] long, y [B] long  ->  eps_hat [B, C, H, W]     (Part 2, num_classes=K)

Layout for the defaults dim=16, dim_mults=(1, 2, 4, 8) on 32x32 images:

    level   resolution  channels   down path                         up path
    0       32x32       16         ResBlock, skip, stride-2          upsample, concat skip, 2 ResBlocks
    1       16x16       32         ResBlock, skip, stride-2          upsample, concat skip, 2 ResBlocks
    2        8x8        64         ResBlock, skip, attention, s-2    upsample, concat skip, 2 ResBlocks, attention
    3        4x4       128         ResBlock, skip                    concat skip, 2 ResBlocks
    middle   4x4       128         ResBlock, attention, ResBlock
    output  32x32        3         3x3 conv of the features  +  1x1 conv of x_t

Every ResBlock is told the time step through a sinusoidal embedding. With
`num_classes=K` (Part 2) a learned embedding of the label y in 0..K (K is the null label,
"no class") is added to that time embedding, so the label reaches every ResBlock the way
the time step does. A 3x3
convolution costs the same at every level (channels double as the area quarters),
but its parameters grow 4x per level, so capacity sits at the coarse levels where it
is cheap, and attention runs only at the two lowest resolutions (64 and 16 tokens
for 32x32), through PyTorch's fused `scaled_dot_product_attention`.

Three choices make it learn faster per step (bench/compare_quality.py measures them):

- Each ResBlock's last convolution and the output convolution start at zero, so the
  untrained network is the plain skip path and each block joins in as it learns
  (the "zero-init residual" of Goyal et al. 2017, as in improved-diffusion).
- No normalisation before the output, and a 1x1 convolution straight from x_t to
  eps_hat. At large t the answer is almost x_t itself, and Algorithm 2 divides the
  error of eps_hat by sqrt(alphas_cumprod[t]), about 0.001 at t = T-1 for T = 50. A
  GroupNorm there removes each image's mean colour, and the error it leaves shows up
  as strong colour casts in the samples.
- A second ResBlock per decoder level, and attention at 8x8 as well as at 4x4.

Speed (see bench/): training is almost all convolution arithmetic, so the layers
are chosen to spend few operations at full resolution. Upsampling is a 4x4
transposed convolution with stride 2. It mixes the same 2x2 coarse neighbours into
each fine pixel as "nearest upsample, then 3x3 convolution" does (that pair is the
special case with tied weights), at 16/36 of the cost, because it works on the
coarse map instead of the 4x larger upsampled one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """The Transformer's positional encoding, applied to diffusion time steps.

    With half = dim // 2 and i = 0..half-1:

        emb[:, i]        = sin(t / max_period ** (i / half))
        emb[:, half + i] = cos(t / max_period ** (i / half))

    Low i varies fast with t, high i slowly, so nearby steps get similar but
    distinguishable vectors.

    Args:
        t: [B] time steps (any numeric dtype).
        dim: the embedding size, even.
    Returns:
        [B, dim] float32.
    """
    if dim % 2:
        raise ValueError(f"the time embedding size must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    """norm-SiLU-conv, FiLM by the time embedding, norm-SiLU-conv, plus a skip path.

    The time embedding sets a per-channel scale and shift after the first
    convolution: h <- h * (1 + scale) + shift. The second convolution starts at zero,
    so a new block computes just its skip path (see the module docstring).
    """

    def __init__(self, in_channels: int, out_channels: int, time_dim: int):
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, 2 * out_channels)
        self.norm2 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.time_proj(time_emb)[:, :, None, None].chunk(2, dim=1)
        # shift + h * (1 + scale) in one pass over h instead of two (the ops here are memory-bound).
        h = torch.addcmul(shift, self.norm2(h), 1 + scale)
        h = self.conv2(F.silu(h))
        return h + self.skip(x)


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a (small) feature map, with a residual."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        if channels % heads:
            heads = 1
        self.heads = heads
        self.norm = _group_norm(channels)
        self.to_qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # each [B, heads, HW, c // heads]
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = attended.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.out(attended)


class Unet(nn.Module):
    """A U-Net that predicts the noise in x_t.

    Args:
        dim: channels at the finest level; level i has dim * dim_mults[i].
        dim_mults: one multiplier per level; each level after the first halves H and W.
        channels: image channels in and out (3 for RGB, 1 for greyscale).
        num_classes: None for Part 1's unconditional network (no extra parameters, so Part 1
            checkpoints load unchanged). K for Part 2: forward then takes labels y in 0..K,
            where K is the null label of classifier-free guidance.

    Input sizes must be divisible by 2 ** (len(dim_mults) - 1): 8 for the defaults.
    """

    def __init__(self, dim: int = 16, dim_mults: tuple[int, ...] = (1, 2, 4, 8), channels: int = 3,
                 num_classes: int | None = None):
        super().__init__()
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(f"Unet: num_classes must be a positive int (or None for Part 1), got {num_classes!r}")
        dim_mults = tuple(dim_mults)
        if dim < 1 or not dim_mults or any(m < 1 for m in dim_mults):
            raise ValueError(f"Unet needs dim >= 1 and positive dim_mults, got dim={dim}, dim_mults={dim_mults}")
        self.dim = dim
        self.dim_mults = dim_mults
        self.channels = channels
        self.size_multiple = 2 ** (len(dim_mults) - 1)

        time_dim = 4 * dim
        self.time_embed_dim = dim
        self.time_mlp = nn.Sequential(nn.Linear(dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.num_classes = num_classes
        if num_classes is not None:
            # K + 1 rows: labels 0..K-1 and the null label K. Zero at the start, so the untrained
            # network is the unconditional one and each label learns its own offset from there.
            self.label_emb = nn.Embedding(num_classes + 1, time_dim)
            nn.init.zeros_(self.label_emb.weight)

        widths = [dim * m for m in dim_mults]
        self.init_conv = nn.Conv2d(channels, dim, 3, padding=1)

        self.down_blocks = nn.ModuleList()
        self.down_attns = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        in_width = dim
        for level, width in enumerate(widths):
            self.down_blocks.append(ResBlock(in_width, width, time_dim))
            self.down_attns.append(Attention(width) if self._has_attention(level) else nn.Identity())
            is_last = level == len(widths) - 1
            self.downsamples.append(nn.Identity() if is_last else nn.Conv2d(width, width, 3, stride=2, padding=1))
            in_width = width

        bottom = widths[-1]
        self.mid_blocks = nn.ModuleList([ResBlock(bottom, bottom, time_dim) for _ in range(2)])
        self.mid_attn = Attention(bottom)

        self.upsamples = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        self.up_attns = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            is_last = level == len(widths) - 1
            coarser = bottom if is_last else widths[level + 1]
            # Doubles H and W: see the module docstring for why a transposed convolution.
            self.upsamples.append(
                nn.Identity() if is_last else nn.ConvTranspose2d(coarser, width, 4, stride=2, padding=1)
            )
            # The first block takes the encoder's skip concatenated; the second refines.
            self.up_blocks.append(nn.ModuleList([ResBlock(2 * width, width, time_dim), ResBlock(width, width, time_dim)]))
            self.up_attns.append(Attention(width) if self._has_attention(level) else nn.Identity())

        # eps_hat = final(features) + input_skip(x_t); why no norm and why the skip: see the module docstring.
        self.final = nn.Conv2d(dim, channels, 3, padding=1)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)
        self.input_skip = nn.Conv2d(channels, channels, 1)

    def _has_attention(self, level: int) -> bool:
        """Attention outside the middle: at the second-lowest resolution (8x8 for 32x32 images)."""
        return level == len(self.dim_mults) - 2

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for an input this network cannot take (shapes only, no sync)."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"Unet expects images shaped [B, {self.channels}, H, W], got {list(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(
                f"image size {h}x{w} is not divisible by {self.size_multiple} = 2 ** (len(dim_mults) - 1) "
                f"for dim_mults={self.dim_mults}: use an image size that is a multiple of {self.size_multiple} "
                "or fewer levels"
            )

    def check_labels(self, y: torch.Tensor | None, batch_size: int) -> None:
        """Raise a clear error for labels this network cannot take.

        The range is checked only for labels on the CPU (free there); on a GPU it would cost a
        synchronisation per call, so ConditionalGaussianDiffusion checks labels on the CPU first.
        """
        if self.num_classes is None:
            if y is not None:
                raise ValueError("this Unet is unconditional (num_classes=None) but was given labels y: "
                                 "build it with Unet(num_classes=K) for class-conditional training")
            return
        if y is None:
            return
        if not isinstance(y, torch.Tensor) or y.dtype != torch.long or y.shape != (batch_size,):
            got = f"{y.dtype} {list(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"Unet expects labels y as a [B] = [{batch_size}] long tensor, got {got}")
        if y.device.type == "cpu" and y.numel() and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
            raise ValueError(f"labels must lie in 0..{self.num_classes} ({self.num_classes} is the null label), "
                             f"got {int(y.min())}..{int(y.max())}")

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, C, H, W], t: [B] long time steps, y: [B] long labels in 0..K or None -> eps_hat [B, C, H, W].

        y is only for num_classes=K; None there means the null label K for every example.
        """
        self.check_input(x)
        self.check_labels(y, x.shape[0])
        time_emb = self.time_mlp(sinusoidal_embedding(t, self.time_embed_dim))
        if self.num_classes is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            time_emb = time_emb + self.label_emb(y)

        h = self.init_conv(x)
        skips = []
        for block, attn, downsample in zip(self.down_blocks, self.down_attns, self.downsamples):
            h = block(h, time_emb)
            skips.append(h)
            h = downsample(attn(h))

        h = self.mid_attn(self.mid_blocks[0](h, time_emb))
        h = self.mid_blocks[1](h, time_emb)

        for upsample, (merge_block, refine_block), attn in zip(self.upsamples, self.up_blocks, self.up_attns):
            h = merge_block(torch.cat([upsample(h), skips.pop()], dim=1), time_emb)
            h = attn(refine_block(h, time_emb))
        return self.final(h) + self.input_skip(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
