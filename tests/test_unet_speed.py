"""The speed choices in unet.py keep what its docstring promises."""

import torch
import torch.nn.functional as F

from unet import Unet

# Nearest-neighbour upsampling followed by a 3x3 convolution, written as a 4x4 transposed convolution
# with stride 2: along each axis, fine pixel 2i takes coarse pixels i-1 and i, fine pixel 2i+1 takes
# i and i+1, with the 3 taps w0, w1, w2 summed into 4 taps (w2, w1+w2, w0+w1, w0).
TAPS_3_TO_4 = torch.tensor([[0.0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]])


def test_upsampling_contains_nearest_upsample_then_conv():
    torch.manual_seed(0)
    model = Unet(dim=8, dim_mults=(1, 2, 4))
    upsamples = [m for m in model.upsamples if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(upsamples) == 2
    for up in upsamples:
        c_in, c_out = up.in_channels, up.out_channels
        conv = torch.nn.Conv2d(c_in, c_out, 3, padding=1)
        with torch.no_grad():
            # ConvTranspose2d weights are [in, out, kH, kW].
            up.weight.copy_(torch.einsum("ak,bl,oikl->ioab", TAPS_3_TO_4, TAPS_3_TO_4, conv.weight))
            up.bias.copy_(conv.bias)
            x = torch.randn(2, c_in, 4, 4)
            expected = conv(F.interpolate(x, scale_factor=2, mode="nearest"))
            torch.testing.assert_close(up(x), expected, rtol=1e-4, atol=1e-5)
