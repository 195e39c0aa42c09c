"""Part 2's core: the conditional U-Net, label dropout, guidance, thresholding and label checks.

Expected values come from hand-written formulas or from Part 1's GaussianDiffusion, never from
the function under test.
"""

import pytest
import torch
from torch import nn

from diffusion import ConditionalGaussianDiffusion, GaussianDiffusion
from unet import Unet

K = 3


class LabelModel(nn.Module):
    """eps_hat = tanh(x_t * gain[y] + shift[t]): per example, so batching cannot change a value."""

    def __init__(self, num_classes=K, timesteps=10, channels=3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.gain = nn.Parameter(torch.rand(num_classes + 1, channels, generator=g) + 0.5)
        self.shift = nn.Parameter(torch.randn(timesteps, channels, generator=g))
        self.calls = []

    def forward(self, x, t, y):
        self.calls.append(x.shape[0])
        return torch.tanh(x * self.gain[y][:, :, None, None] + self.shift[t][:, :, None, None])


def make(p_uncond=0.1, timesteps=10, channels=3, size=4):
    model = LabelModel(timesteps=timesteps, channels=channels)
    return ConditionalGaussianDiffusion(model, size, K, channels=channels, timesteps=timesteps, p_uncond=p_uncond)


def batch(b=4, channels=3, size=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, channels, size, size, generator=g)
    t = torch.randint(0, 10, (b,), generator=g)
    y = torch.randint(0, K, (b,), generator=g)
    return x, t, y


# ---- guidance ---------------------------------------------------------------------------------


@pytest.mark.parametrize("w", [0.5, 1.0, 2.0, 5.0, -1.0])
def test_guided_noise_is_the_cfg_formula(w):
    d = make()
    x, t, y = batch()
    null = torch.full_like(y, K)
    expected = (1 + w) * d.model(x, t, y) - w * d.model(x, t, null)
    d.model.calls.clear()
    got = d.guided_noise(x, t, y, w)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert d.model.calls == [2 * x.shape[0]], "one network call on 2B, not two on B"


def test_w_zero_is_the_conditional_model():
    d = make()
    x, t, y = batch()
    torch.testing.assert_close(d.guided_noise(x, t, y, 0.0), d.model(x, t, y), rtol=0, atol=0)


def test_w_minus_one_is_the_unconditional_model():
    d = make()
    x, t, y = batch()
    torch.testing.assert_close(d.guided_noise(x, t, y, -1.0), d.model(x, t, torch.full_like(y, K)), rtol=1e-6, atol=1e-6)


class LabelBlindModel(LabelModel):
    def forward(self, x, t, y=None):
        return super().forward(x, t, torch.zeros_like(t))


def test_p_sample_at_w0_static_equals_part_1_with_a_label_blind_model():
    """With a model that ignores y, Part 2's step at w = 0 with static thresholding is Part 1's step."""
    model = LabelBlindModel()
    cond = ConditionalGaussianDiffusion(model, 4, K, channels=3, timesteps=10)
    part1 = GaussianDiffusion(model, 4, channels=3, timesteps=10)
    z = torch.randn(4, 3, 4, 4)
    part1.noise_like = cond.noise_like = lambda shape, device: z.clone()
    x, _, y = batch()
    for t_index in (0, 1, 9):
        t = torch.full((4,), t_index, dtype=torch.long)
        torch.testing.assert_close(cond.p_sample(x, t, t_index, y, 0.0, "static"), part1.p_sample(x, t, t_index),
                                   rtol=1e-6, atol=1e-6)


# ---- thresholding -----------------------------------------------------------------------------


def hand_quantile(values: torch.Tensor, p: float) -> float:
    """Linear interpolation between order statistics (numpy's and torch's default), by hand."""
    v = sorted(values.tolist())
    position = p * (len(v) - 1)
    low = int(position)
    high = min(low + 1, len(v) - 1)
    return v[low] + (v[high] - v[low]) * (position - low)


def test_dynamic_threshold_per_example():
    d = make()
    g = torch.Generator().manual_seed(1)
    x0_hat = torch.randn(3, 3, 8, 8, generator=g)
    x0_hat[0] *= 0.3  # within [-1, 1]: s floors at 1, unchanged
    x0_hat[1] *= 4.0  # well outside: scaled by its own s
    x0_hat[2] *= 1.5
    got = d.threshold(x0_hat, "dynamic")
    for b in range(3):
        s = max(1.0, hand_quantile(x0_hat[b].abs().flatten(), 0.995))
        expected = x0_hat[b].clamp(-s, s) / s
        torch.testing.assert_close(got[b], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[0], x0_hat[0], rtol=0, atol=0)  # s floored at 1: not scaled up
    assert got.abs().max() <= 1.0 + 1e-6
    # per example: an example's result does not depend on the others in the batch
    torch.testing.assert_close(d.threshold(x0_hat[1:2], "dynamic"), got[1:2], rtol=0, atol=0)


def test_dynamic_threshold_uses_absolute_values():
    """All-negative values: the quantile of x0_hat would be negative; that of |x0_hat| is not."""
    d = make()
    x0_hat = -torch.linspace(1.0, 3.0, 3 * 4 * 4).reshape(1, 3, 4, 4)
    s = hand_quantile(x0_hat.abs().flatten(), 0.995)
    torch.testing.assert_close(d.threshold(x0_hat, "dynamic"), x0_hat.clamp(-s, s) / s, rtol=1e-5, atol=1e-6)


def test_static_and_none_thresholds():
    d = make()
    x0_hat = torch.linspace(-3, 3, 48).reshape(1, 3, 4, 4)
    assert torch.equal(d.threshold(x0_hat, "none"), x0_hat)
    assert torch.equal(d.threshold(x0_hat, "static"), x0_hat.clamp(-1, 1))
    with pytest.raises(ValueError, match="threshold must be one of none, static, dynamic"):
        d.threshold(x0_hat, "Dynamic")


# ---- label dropout ----------------------------------------------------------------------------


def test_dropout_follows_the_uniform_seam():
    d = make(p_uncond=0.25)
    y = torch.tensor([0, 1, 2, 1, 0])
    d.uniform_like = lambda shape, device: torch.tensor([0.1, 0.3, 0.24, 0.9, 0.26])
    assert d.drop_labels(y).tolist() == [K, 1, K, 1, 0]
    assert y.tolist() == [0, 1, 2, 1, 0], "y itself must stay unchanged"


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_dropout_rate(p):
    d = make(p_uncond=p)
    torch.manual_seed(0)
    n = 20000
    y = torch.randint(0, K, (n,))
    dropped = d.drop_labels(y)
    rate = (dropped == K).float().mean().item()
    assert abs(rate - p) < 0.015, (rate, p)  # 4.7 standard deviations at p = 0.5
    kept = dropped != K
    assert torch.equal(dropped[kept], y[kept])
    # one decision per example: a batch of 200 is neither all dropped nor all kept (odds < 1e-9)
    if 0 < p < 1:
        for _ in range(5):
            share = (d.drop_labels(torch.zeros(200, dtype=torch.long)) == K).float().mean().item()
            assert 0 < share < 1, share


def test_forward_drops_labels_and_passes_them_to_the_model():
    d = make(p_uncond=0.5)
    x_0 = torch.rand(4, 3, 4, 4) * 2 - 1
    d.uniform_like = lambda shape, device: torch.tensor([0.1, 0.9, 0.4, 0.6])
    seen = []
    original = d.model.forward
    d.model.forward = lambda x, t, y: (seen.append(y.clone()), original(x, t, y))[1]
    loss = d(x_0, [0, 1, 2, 0])
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert seen[0].tolist() == [K, 1, K, 0]


# ---- label validation -------------------------------------------------------------------------


@pytest.mark.parametrize("labels, message", [
    ([0, K + 1], f"label {K + 1} is outside 0..{K}"),
    ([-1, 0], f"label -1 is outside 0..{K}"),
    (torch.tensor([0.0, 1.0]), "1-D list or tensor of ints"),
    (torch.zeros(2, 2, dtype=torch.long), "1-D list or tensor of ints"),
    ("cat", "1-D list or tensor of ints"),
])
def test_bad_labels_raise_a_clear_value_error(labels, message):
    d = make()
    with pytest.raises(ValueError, match=message):
        d.sample(labels)
    with pytest.raises(ValueError, match=message):
        d(torch.zeros(2, 3, 4, 4), labels)


def test_null_label_is_allowed_and_labels_accept_lists_and_tensors():
    d = make()
    d.num_timesteps = 10
    out = d.sample([0, K], w=1.0, threshold="dynamic")
    assert out.shape == (2, 3, 4, 4)
    out2 = d.sample(torch.tensor([2, 1], dtype=torch.int32))
    assert out2.shape == (2, 3, 4, 4)


def test_sample_rejects_an_unknown_threshold_before_sampling():
    d = make()
    d.model.calls.clear()
    with pytest.raises(ValueError, match="threshold must be one of"):
        d.sample([0], threshold="clip")
    assert d.model.calls == []


def test_constructor_validates():
    with pytest.raises(ValueError, match="p_uncond"):
        ConditionalGaussianDiffusion(LabelModel(), 4, K, p_uncond=1.5)
    with pytest.raises(ValueError, match="num_classes"):
        ConditionalGaussianDiffusion(LabelModel(), 4, 0)


# ---- the conditional U-Net ------------------------------------------------------------------


def test_unet_with_classes_shapes_and_null_default():
    torch.manual_seed(0)
    model = Unet(dim=8, dim_mults=(1, 2), num_classes=K)
    for p in model.parameters():  # as if trained: no layer at its zero initialisation, so labels matter
        nn.init.normal_(p, std=0.2)
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([0, 5, 9])
    out = model(x, t, torch.tensor([0, 1, K]))
    assert out.shape == x.shape
    assert torch.equal(model(x, t), model(x, t, torch.full((3,), K)))  # y=None is the null label
    assert not torch.allclose(model(x, t, torch.tensor([0, 0, 0])), model(x, t, torch.tensor([1, 1, 1])))


def test_untrained_conditional_unet_equals_unconditional():
    """The label embedding starts at zero: before training, the label changes nothing."""
    torch.manual_seed(0)
    model = Unet(dim=8, dim_mults=(1, 2), num_classes=K)
    assert torch.equal(model.label_emb.weight, torch.zeros(K + 1, 32))
    for name, p in model.named_parameters():  # every other layer as if trained, so a label would show
        if name != "label_emb.weight":
            nn.init.normal_(p, std=0.2)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    assert torch.equal(model(x, t, torch.tensor([0, 1])), model(x, t, torch.tensor([2, K])))


def test_part1_unet_unchanged_and_checkpoints_load():
    part1 = Unet(dim=8, dim_mults=(1, 2))
    keys = set(part1.state_dict())
    assert not any("label" in k for k in keys)
    Unet(dim=8, dim_mults=(1, 2), num_classes=None).load_state_dict(part1.state_dict(), strict=True)
    conditional = Unet(dim=8, dim_mults=(1, 2), num_classes=K)
    assert set(conditional.state_dict()) - keys == {"label_emb.weight"}
    assert conditional.label_emb.weight.shape == (K + 1, 4 * 8)


def test_unet_label_errors():
    cond = Unet(dim=8, dim_mults=(1, 2), num_classes=K)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=f"labels must lie in 0..{K}"):
        cond(x, t, torch.tensor([0, K + 1]))
    with pytest.raises(ValueError, match=r"\[B\] = \[2\] long tensor"):
        cond(x, t, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="unconditional"):
        Unet(dim=8, dim_mults=(1, 2))(x, t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        Unet(num_classes=0)
