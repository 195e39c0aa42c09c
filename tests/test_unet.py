"""The provided U-Net: shapes, size, errors, time embedding and resolutions."""

import math

import pytest
import torch

from unet import Attention, ResBlock, Unet, count_parameters, sinusoidal_embedding


def trained_a_little(model: Unet) -> Unet:
    """Three Adam steps on random data, so that no layer is still at its zero initialisation (see unet.py).

    The gradient reaches one zero layer deeper per step: the first step moves the output
    convolution, the second every ResBlock's last convolution, the third everything before them.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, t = torch.randn(4, model.channels, 16, 16), torch.tensor([0, 10, 20, 30])
    for _ in range(3):
        (model(x, t) - torch.randn_like(x)).abs().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [32, 64])
def test_output_shape_matches_input(channels, size):
    model = Unet(dim=8, dim_mults=(1, 2, 4, 8), channels=channels)
    x = torch.randn(2, channels, size, size)
    out = model(x, torch.tensor([0, 49]))
    assert out.shape == x.shape


def test_default_parameter_count():
    n = count_parameters(Unet())
    assert 1.5e6 <= n <= 3e6, n


@pytest.mark.parametrize("size", [36, 20, 33])
def test_size_not_divisible_gives_a_clear_error(size):
    model = Unet(dim=8)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.randn(1, 3, size, size), torch.tensor([0]))


def test_fewer_levels_accept_smaller_multiples():
    model = Unet(dim=8, dim_mults=(1, 2))
    assert model(torch.randn(1, 3, 18, 18), torch.tensor([3])).shape == (1, 3, 18, 18)


def test_wrong_channel_count_gives_a_clear_error():
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        Unet(dim=8)(torch.randn(1, 1, 32, 32), torch.tensor([0]))


@pytest.mark.parametrize("dim_mults", [(), (1, 0), (-1, 2)])
def test_bad_dim_mults_rejected(dim_mults):
    with pytest.raises(ValueError):
        Unet(dim=8, dim_mults=dim_mults)


def test_time_embedding_dimension_8_at_t_1_by_hand():
    # half = 4, frequencies 10000 ** (-i / 4) = 1, 0.1, 0.01, 0.001
    expected = [
        math.sin(1.0), math.sin(0.1), math.sin(0.01), math.sin(0.001),
        math.cos(1.0), math.cos(0.1), math.cos(0.01), math.cos(0.001),
    ]
    got = sinusoidal_embedding(torch.tensor([1]), 8)
    assert got.shape == (1, 8)
    assert got[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_time_embedding_at_t_0_is_zeros_then_ones():
    got = sinusoidal_embedding(torch.tensor([0, 0]), 6)
    assert got.tolist() == [[0, 0, 0, 1, 1, 1]] * 2


@pytest.mark.slow
def test_time_step_changes_the_output():
    torch.manual_seed(0)
    model = trained_a_little(Unet(dim=8, dim_mults=(1, 2)))
    x = torch.randn(1, 3, 8, 8).repeat(2, 1, 1, 1)
    out = model(x, torch.tensor([0, 30]))
    assert not torch.allclose(out[0], out[1])


@pytest.mark.slow
def test_bottleneck_and_attention_at_the_two_lowest_resolutions():
    """A 64x64 input reaches 8x8 after 3 stride-2 downsamplings; attention sees only 16x16 and 8x8."""
    model = Unet(dim=8, dim_mults=(1, 2, 4, 8))
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape)))
             for m in model.modules() if isinstance(m, Attention)]
    model(torch.randn(2, 3, 64, 64), torch.tensor([1, 2]))
    for hook in hooks:
        hook.remove()
    # down and up at 16x16 (32 channels), the middle at 8x8 (64 channels)
    assert sorted(seen) == [(2, 32, 16, 16), (2, 32, 16, 16), (2, 64, 8, 8)]


def test_untrained_network_is_its_skip_paths():
    """Zero-initialised last convolutions: every ResBlock returns its skip path, and eps_hat = input_skip(x_t)."""
    torch.manual_seed(0)
    model = Unet(dim=8, dim_mults=(1, 2, 4))
    x = torch.randn(2, 3, 16, 16)
    blocks_checked = []

    def check(block, inputs, output):
        torch.testing.assert_close(output, block.skip(inputs[0]))
        blocks_checked.append(block)

    hooks = [m.register_forward_hook(check) for m in model.modules() if isinstance(m, ResBlock)]
    out = model(x, torch.tensor([0, 40]))
    for hook in hooks:
        hook.remove()
    assert len(blocks_checked) == 3 + 2 + 3 * 2  # down, middle, up
    torch.testing.assert_close(out, model.input_skip(x))


@pytest.mark.slow
def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = trained_a_little(Unet(dim=8, dim_mults=(1, 2, 4)))
    model(torch.randn(2, 3, 16, 16), torch.tensor([1, 5])).square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


@pytest.mark.slow
def test_channels_last_gives_the_same_result():
    torch.manual_seed(0)
    model = trained_a_little(Unet(dim=8, dim_mults=(1, 2)))
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 4])
    expected = model(x, t)
    model = model.to(memory_format=torch.channels_last)
    got = model(x.contiguous(memory_format=torch.channels_last), t)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
