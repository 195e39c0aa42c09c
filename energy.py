"""Part 3: an energy-based model (EBM) trained by contrastive divergence, sampled with Langevin dynamics.

Read this file top to bottom. The provided parts come first: the energy network `EnergyNet`,
and in `EnergyModel` the replay buffer and the three sources of randomness (`noise_like`,
`uniform_like`, `draw_replay`). Then the seven functions you write, in the order the method
uses them:

    langevin_step    one step  x <- clamp(x - step_size * dE/dx + noise_scale * z, -1, 1)
    langevin_sample  `steps` Langevin steps from a starting batch
    loss             contrastive divergence with a regulariser
    sample_buffer    starting points for training: most from the replay buffer, some (30%) fresh noise
    update_buffer    write the chains' end points back into the buffer
    forward          one training loss: buffer -> Langevin -> update buffer -> loss
    sample           generate images: uniform noise -> Langevin -> map to [0, 1]

The model (Du & Mordatch, 2019, "Implicit Generation and Generalization in Energy-Based Models").
An energy network E_theta(x) gives every image one number; the model's density is
p(x) ~ exp(-E_theta(x)): real images should get LOW energy. Training lowers the energy of real
images and raises the energy of the model's own samples until the two balance. The samples come
from short runs of Langevin dynamics, which walk downhill on the energy with a little noise. Each
run continues from an earlier run's end point (the replay buffer), so chains get long over training.

Shapes. B is the batch size, C the number of image channels, H = W = image_size. Images are
[B, C, H, W] float tensors in [-1, 1]; energies are [B].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The side of the grid of uniform numbers that fresh chains start from (EnergyModel.uniform_like).
COARSE_NOISE = 8


class EnergyNet(nn.Module):
    """The provided energy network: a small CNN, E(x) [B, C, H, W] -> [B].

    Six 3x3 convolutions with SiLU (Swish) activations: one at full resolution, then three that
    halve the image, the first two followed by one that keeps its size. A linear layer reads the 4x4
    map to one number. SiLU rather than ReLU because Langevin dynamics follows dE/dx: a smooth
    activation gives a smooth gradient field (ReLU's is piecewise constant). The linear layer
    sees WHERE each feature is (a global mean would only count textures, and its samples would
    have no shapes); adaptive pooling to 4x4 first makes any image size work.

    Args:
        channels: C of the images.
        dim: channels of the first convolution; the next levels have 2*dim and 4*dim.
    """

    def __init__(self, channels: int = 3, dim: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, dim, 3, padding=1), nn.SiLU(),                  # [B, dim, H, W]
            nn.Conv2d(dim, 2 * dim, 3, stride=2, padding=1), nn.SiLU(),         # [B, 2 dim, H/2, W/2]
            nn.Conv2d(2 * dim, 2 * dim, 3, padding=1), nn.SiLU(),
            nn.Conv2d(2 * dim, 4 * dim, 3, stride=2, padding=1), nn.SiLU(),     # [B, 4 dim, H/4, W/4]
            nn.Conv2d(4 * dim, 4 * dim, 3, padding=1), nn.SiLU(),
            nn.Conv2d(4 * dim, 4 * dim, 3, stride=2, padding=1), nn.SiLU(),     # [B, 4 dim, H/8, W/8]
            nn.AdaptiveAvgPool2d(4),                                            # [B, 4 dim, 4, 4]
        )
        self.head = nn.Linear(4 * dim * 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] in [-1, 1]. Returns the energies E(x): [B]."""
        return self.head(self.features(x).flatten(1)).squeeze(1)


class EnergyModel(nn.Module):
    """An EBM around an energy network `energy_net(x) -> [B]`, with its replay buffer.

    Args:
        energy_net: maps x [B, C, H, W] to energies [B] (EnergyNet, or the tests' stand-in).
        image_size: H = W of the images.
        channels: C, 3 for RGB, 1 for greyscale.
        step_size: how far one Langevin step moves along -dE/dx.
        noise_scale: the standard deviation of the Gaussian noise added at every step.
        langevin_steps: K, the Langevin steps run for each training batch.
        alpha: the weight of the regulariser alpha * (E(x_real)^2 + E(x_fake)^2) in the loss.
        buffer_size: the number of past samples the replay buffer keeps.
        reinit_prob: the share of training chains started from fresh noise (uniform_like), 30%.
        sample_steps: the Langevin steps `sample` runs from fresh noise (more than K: no buffer helps it).

    The defaults are Du & Mordatch's decoupled Langevin settings (a large step, a small noise:
    the proper Langevin noise sqrt(2 * step_size) would drown the images), with K and the buffer
    sized so that a 3,000-step CPU run trains stably on CIFAR-10 cats and on the three-class set.
    `sample` is a fresh chain, so training restarts many chains (30%): the energy then learns what
    young chains look like, and a typical training chain is a few dozen steps old (K / reinit_prob
    = 33 on average), like `sample`'s 60. Much longer chains from noise reach places no training
    chain went, and get worse.

    Buffers (move with `.to(device)` and are saved in checkpoints):
        replay: [buffer_size, C, H, W], past samples in [-1, 1]; starts as uniform_like's noise.
    """

    def __init__(self, energy_net: nn.Module, image_size: int, channels: int = 3, step_size: float = 10.0,
                 noise_scale: float = 0.005, langevin_steps: int = 10, alpha: float = 0.1, buffer_size: int = 2048,
                 reinit_prob: float = 0.3, sample_steps: int = 60):
        super().__init__()
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        if not 0.0 <= reinit_prob <= 1.0:
            raise ValueError(f"reinit_prob must be in [0, 1], got {reinit_prob}")
        self.energy_net = energy_net
        self.image_size = image_size
        self.channels = channels
        self.step_size = step_size
        self.noise_scale = noise_scale
        self.langevin_steps = langevin_steps
        self.alpha = alpha
        self.buffer_size = buffer_size
        self.reinit_prob = reinit_prob
        self.sample_steps = sample_steps
        self.register_buffer("replay", self.uniform_like((buffer_size, channels, image_size, image_size), "cpu"))

    @property
    def device(self) -> torch.device:
        return self.replay.device

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x): [B, C, H, W] -> [B]."""
        return self.energy_net(x)

    # ------------------------------------------------------------------
    # The sources of randomness: every function below draws through these, never torch.randn & co.,
    # so that the grader can replace them with fixed tensors and check your arithmetic exactly.
    # ------------------------------------------------------------------

    def noise_like(self, shape: torch.Size | tuple, device: torch.device | str) -> torch.Tensor:
        """Standard Gaussian noise N(0, I) of the given shape: the ONLY source of Gaussian noise here."""
        return torch.randn(shape, device=device)

    def uniform_like(self, shape: torch.Size | tuple, device: torch.device | str) -> torch.Tensor:
        """Fresh starting points for Langevin chains: smooth uniform noise on [-1, 1] of the given shape.

        For images [B, C, H, W], uniform numbers on a coarse 8x8 grid, bilinearly upsampled to H x W:
        blobs of random colour at random places, which Langevin dynamics turns into shapes within
        sample_steps. From pixel-by-pixel noise the same chains spend their steps smoothing the noise
        away and all end as one mottled cat-coloured texture.
        """
        if len(shape) != 4:
            return torch.rand(shape, device=device) * 2 - 1
        batch, channels, height, width = shape
        coarse = torch.rand((batch, channels, min(height, COARSE_NOISE), min(width, COARSE_NOISE)), device=device)
        return F.interpolate(coarse * 2 - 1, size=(height, width), mode="bilinear", align_corners=False)

    def draw_replay(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Which buffer slots a training batch uses, and which of its chains restart from noise.

        Returns:
            idx: [B] long, B distinct slots in 0..buffer_size-1 (distinct, so that writing the
                chains back never writes one slot twice).
            fresh: [B] bool, True with probability reinit_prob, independently per example.
        """
        if not 1 <= batch_size <= self.buffer_size:
            raise ValueError(f"batch size {batch_size} must be between 1 and buffer_size = {self.buffer_size}")
        idx = torch.randperm(self.buffer_size, device=self.device)[:batch_size]
        fresh = torch.rand(batch_size, device=self.device) < self.reinit_prob
        return idx, fresh

    # ------------------------------------------------------------------
    # Part 3: Langevin dynamics
    # ------------------------------------------------------------------

    def langevin_step(self, x: torch.Tensor) -> torch.Tensor:
        """One step of Langevin dynamics on the energy, downhill, with noise:

            x' = clamp(x - step_size * grad_x E(x) + noise_scale * z, -1, 1),   z ~ N(0, I) from noise_like

        grad_x E(x) is the gradient with respect to the IMAGES x, not the weights; take it with
        torch.autograd.grad (which leaves the weights' .grad alone) of E(x).sum() (each E(x_b)
        depends on x_b only, so the sum's gradient holds every example's own gradient). Work on
        a detached copy of x that requires grad, and return a detached result: no graph may
        reach from one step into the next, and this must also work under torch.no_grad().

        Args:
            x: [B, C, H, W] in [-1, 1].
        Returns:
            [B, C, H, W] in [-1, 1], detached (requires_grad False).
        """
        # BEGIN SOLUTION
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            energy = self.energy(x).sum()  # sum_b E(x_b)
            (grad,) = torch.autograd.grad(energy, x)  # dE/dx: [B, C, H, W]; no weight gradients
        z = self.noise_like(x.shape, x.device)
        return (x.detach() - self.step_size * grad + self.noise_scale * z).clamp(-1.0, 1.0)
        # END SOLUTION

    def langevin_sample(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        """Run `steps` Langevin steps from x, each continuing from the last.

            for k = 1..steps:  x <- langevin_step(x)

        Args:
            x: [B, C, H, W] in [-1, 1], the chains' starting points.
            steps: the number of steps (0 returns x unchanged).
        Returns:
            [B, C, H, W] in [-1, 1], detached.
        """
        # BEGIN SOLUTION
        x = x.detach()
        for _ in range(steps):
            x = self.langevin_step(x)
        return x
        # END SOLUTION

    # ------------------------------------------------------------------
    # Part 3: contrastive divergence
    # ------------------------------------------------------------------

    def loss(self, x_real: torch.Tensor, x_fake: torch.Tensor) -> torch.Tensor:
        """Contrastive divergence with a regulariser:

            L = mean_b E(x_real) - mean_b E(x_fake) + alpha * mean_b (E(x_real)^2 + E(x_fake)^2)

        The first two terms push the energy of real images down and of the model's samples up.
        The regulariser keeps the energies near 0 (without it they can drift off to huge values).
        x_fake is detached first: the loss trains the weights, never the path that made the samples.

        Args:
            x_real: [B, C, H, W] training images in [-1, 1].
            x_fake: [B', C, H, W] Langevin samples in [-1, 1] (B' may differ from B).
        Returns:
            A scalar tensor.
        """
        # BEGIN SOLUTION
        e_real = self.energy(x_real)  # [B]
        e_fake = self.energy(x_fake.detach())  # [B']
        contrastive = e_real.mean() - e_fake.mean()
        regulariser = self.alpha * (e_real.pow(2).mean() + e_fake.pow(2).mean())
        return contrastive + regulariser
        # END SOLUTION

    # ------------------------------------------------------------------
    # Part 3: the replay buffer and the training step
    # ------------------------------------------------------------------

    def sample_buffer(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Starting points for a training batch's chains.

            idx, fresh = draw_replay(B)
            x_b = uniform_like(...)_b  where fresh_b      (about reinit_prob = 30% of the chains)
                = replay[idx_b]        elsewhere          (the other 70% continue old chains)

        Draw the uniform noise with one call uniform_like((B, C, H, W), device) for the whole
        batch and use its rows where `fresh` is True.

        Args:
            batch_size: B.
        Returns:
            x: [B, C, H, W] in [-1, 1], a new tensor (changing it must not change the buffer).
            idx: [B] long, the slots drawn (update_buffer writes the chains' results there).
        """
        # BEGIN SOLUTION
        idx, fresh = self.draw_replay(batch_size)
        shape = (batch_size, self.channels, self.image_size, self.image_size)
        noise = self.uniform_like(shape, self.device)
        x = torch.where(fresh[:, None, None, None], noise, self.replay[idx])
        return x, idx
        # END SOLUTION

    def update_buffer(self, x: torch.Tensor, idx: torch.Tensor) -> None:
        """Write the chains' end points back into the slots they came from:

            replay[idx_b] = x_b   for every b

        Store them detached (the buffer keeps no graph).

        Args:
            x: [B, C, H, W] in [-1, 1], the samples after Langevin.
            idx: [B] long, the slots sample_buffer drew.
        """
        # BEGIN SOLUTION
        self.replay[idx] = x.detach()
        # END SOLUTION

    def forward(self, x_real: torch.Tensor) -> torch.Tensor:
        """One training loss for a batch of real images:

            x_init, idx = sample_buffer(B)
            x_fake      = langevin_sample(x_init, langevin_steps)     (the weights are not changed)
            update_buffer(x_fake, idx)
            return loss(x_real, x_fake)

        Args:
            x_real: [B, C, H, W] training images in [-1, 1].
        Returns:
            A scalar tensor (backward() on it trains the energy network).
        """
        # BEGIN SOLUTION
        x_init, idx = self.sample_buffer(x_real.shape[0])
        x_fake = self.langevin_sample(x_init, self.langevin_steps)
        self.update_buffer(x_fake, idx)
        return self.loss(x_real, x_fake)
        # END SOLUTION

    def sample(self, batch_size: int) -> torch.Tensor:
        """Generate images from scratch: uniform noise, sample_steps Langevin steps, map to [0, 1].

            x = uniform_like((B, C, H, W), device)
            images = (langevin_sample(x, sample_steps) + 1) / 2

        Args:
            batch_size: B, the number of images.
        Returns:
            [B, C, H, W] in [0, 1], on the buffer's device.
        """
        # BEGIN SOLUTION
        shape = (batch_size, self.channels, self.image_size, self.image_size)
        x = self.uniform_like(shape, self.device)
        return (self.langevin_sample(x, self.sample_steps) + 1) / 2
        # END SOLUTION
