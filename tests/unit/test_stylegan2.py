"""StyleGAN2 networks and training pieces against their definitions: the batched modulated convolution equals
a per-sample loop, demodulation and equalized lr keep unit scale, R1 and path length are the formulas,
truncation and style mixing do what the paper says. Tiny widths throughout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from difgan.errors import ConfigError
from difgan.losses import path_length_penalty, path_lengths
from difgan.models.gan import GANStep
from difgan.models.stylegan2 import StyleGAN2
from difgan.nets.stylegan2 import (
    EqualizedConv2d,
    EqualizedLinear,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    fir_kernel,
    mix_styles,
    modulated_conv2d,
    upsample_fir,
)

TINY = dict(latent_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=8)


def _naive_modulated(x, weight, styles, demodulate, up):
    """The paper's eq. 1-3 one sample at a time: w'_ijk = s_i w_ijk, w''_ijk = w'_ijk / sqrt(sum_ik w'^2)."""
    outs = []
    for b in range(x.shape[0]):
        w = weight * styles[b][None, :, None, None]
        if demodulate:
            w = w / torch.sqrt((w**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        if up:
            outs.append(F.conv_transpose2d(x[b:b + 1], w.transpose(0, 1), stride=2))
        else:
            outs.append(F.conv2d(x[b:b + 1], w, padding=weight.shape[-1] // 2))
    return torch.cat(outs)


@pytest.mark.parametrize("demodulate,up,k", [(True, False, 3), (False, False, 1), (True, True, 3)])
def test_modulated_conv_is_one_grouped_conv_equal_to_a_per_sample_loop(demodulate, up, k):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 6, 6, generator=g)
    weight = torch.randn(4, 5, k, k, generator=g)
    styles = torch.randn(3, 5, generator=g)
    ours = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up)
    ref = _naive_modulated(x, weight, styles, demodulate, up)
    assert ours.shape == ref.shape and torch.allclose(ours, ref, atol=1e-5)


def test_demodulation_gives_unit_output_variance_for_unit_variance_input():
    torch.manual_seed(0)
    x = torch.randn(4, 64, 24, 24)
    out = modulated_conv2d(x, torch.randn(16, 64, 3, 3), torch.rand(4, 64) * 3 + 0.1)
    inner = out[:, :, 1:-1, 1:-1]  # away from the zero padding
    assert inner.var().item() == pytest.approx(1.0, abs=0.05)
    # without demodulation the scale follows the styles
    raw = modulated_conv2d(x, torch.randn(16, 64, 3, 3), torch.full((4, 64), 3.0), demodulate=False)
    assert raw[:, :, 1:-1, 1:-1].var().item() > 100


def test_equalized_lr_layers_keep_activation_scale_at_init():
    torch.manual_seed(0)
    x = torch.randn(4096, 256)
    lin = EqualizedLinear(256, 128)
    assert lin(x).std().item() == pytest.approx(1.0, abs=0.05)
    # lr_mult changes the parameters' scale, not the function's
    slow = EqualizedLinear(256, 128, lr_mult=0.01)
    assert slow.weight.std().item() == pytest.approx(100, rel=0.05)
    assert slow(x).std().item() == pytest.approx(1.0, abs=0.05)
    conv = EqualizedConv2d(64, 32, 3)
    y = conv(torch.randn(8, 64, 16, 16))[:, :, 1:-1, 1:-1]
    assert y.std().item() == pytest.approx(1.0, abs=0.05)
    # leaky ReLU with gain sqrt(2) keeps the second moment
    act = EqualizedLinear(256, 128, activation="lrelu")
    assert act(x).square().mean().item() == pytest.approx(1.0, abs=0.1)


def test_fir_upsampling_keeps_constant_images_constant():
    x = torch.full((1, 2, 4, 4), 0.7)
    up = upsample_fir(x, fir_kernel())
    assert up.shape == (1, 2, 8, 8)
    assert torch.allclose(up[:, :, 2:-2, 2:-2], torch.full_like(up[:, :, 2:-2, 2:-2], 0.7), atol=1e-6)


@pytest.mark.parametrize("resolution,channels,upsample", [(16, 1, "fir"), (32, 3, "bilinear")])
def test_generator_and_discriminator_shapes(resolution, channels, upsample):
    g = StyleGAN2Generator(8, 8, channels, resolution, 2, 64, 8, upsample=upsample)
    d = StyleGAN2Discriminator(channels, resolution, 64, 8, mbstd_group_size=2)
    img = g(torch.randn(6, 8))
    assert img.shape == (6, channels, resolution, resolution)
    assert g.num_ws == 2 * int(math.log2(resolution)) - 2
    assert d(img).shape == (6,)
    for mode in ("const", "none"):  # deterministic noise modes
        z = torch.randn(2, 8)
        assert torch.equal(g(z, noise_mode=mode), g(z, noise_mode=mode))


def test_conditional_networks_use_the_label():
    torch.manual_seed(0)
    g = StyleGAN2Generator(8, 8, 1, 16, 2, 64, 8, num_classes=3)
    d = StyleGAN2Discriminator(1, 16, 64, 8, num_classes=3, mbstd_group_size=2)
    z = torch.randn(2, 8).repeat(2, 1)
    labels = torch.tensor([0, 0, 1, 1])
    img = g(z, labels, noise_mode="const")
    assert not torch.allclose(img[:2], img[2:])
    logits = d(img[:2].repeat(2, 1, 1, 1), labels)
    assert not torch.allclose(logits[:2], logits[2:])


def test_r1_is_gamma_over_two_times_the_squared_input_gradient_of_a_linear_discriminator():
    model = StyleGAN2((1, 16, 16), r1_gamma=4.0, **TINY)
    w = torch.randn(1, 16, 16)

    class Linear(nn.Module):
        def forward(self, x, labels=None):
            return (x * w).flatten(1).sum(1) + 0.3

    model._discriminator = Linear()
    step = GANStep(torch.randn(5, 1, 16, 16), None)
    assert model.r1_loss(step).item() == pytest.approx(2.0 * w.square().sum().item(), rel=1e-5)


def test_path_length_penalty_is_zero_when_the_jacobian_norm_equals_the_running_mean():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(16, 16))  # orthogonal: ||J^T y|| = scale ||y|| for every y
    scale = 3.0
    ws = torch.randn(4, 1, 16, requires_grad=True)
    images = (scale * ws[:, 0] @ q.T).reshape(4, 1, 4, 4)
    y = torch.randn(4, 1, 4, 4)
    y = y / y.flatten(1).norm(dim=1).view(-1, 1, 1, 1)  # unit-norm image-space directions
    lengths = path_lengths(images, ws, noise=y)
    assert torch.allclose(lengths, torch.full((4,), scale), atol=1e-5)
    penalty, mean = path_length_penalty(lengths, torch.tensor(scale, dtype=torch.float64))
    assert penalty.item() == pytest.approx(0.0, abs=1e-9) and mean.item() == pytest.approx(scale)
    # a running mean elsewhere: the penalty is (length - moved mean)^2, the mean moves by decay 0.01
    penalty, mean = path_length_penalty(lengths, torch.tensor(1.0, dtype=torch.float64), decay=0.01)
    assert mean.item() == pytest.approx(1.0 + 0.01 * (scale - 1.0))
    assert penalty.item() == pytest.approx((scale - mean.item()) ** 2, rel=1e-5)


def test_truncation_psi_zero_gives_the_mean_w_image():
    torch.manual_seed(0)
    model = StyleGAN2((1, 16, 16), ema=None, **TINY)
    g = model.generator
    g.w_avg.copy_(torch.randn(8))
    a = model.sample(3, truncation_psi=0.0, noise_mode="const")
    mean_image = g.synthesis(g.w_avg[None, None].expand(1, g.num_ws, -1), noise_mode="const")
    assert torch.allclose(a, mean_image.clamp(-1, 1).expand_as(a), atol=1e-5)
    b = model.sample(3, truncation_psi=1.0, noise_mode="const")
    assert not torch.allclose(b[0], b[1])
    with pytest.raises(ValueError, match="truncation_psi"):
        model.sample(1, truncation_psi=1.5)
    with pytest.raises(ValueError, match="noise_mode"):
        model.sample(1, noise_mode="sometimes")


def test_style_mixing_uses_the_second_w_from_the_crossover_layer_on():
    model = StyleGAN2((1, 16, 16), mixing_prob=1.0, **TINY)
    g = model.generator
    torch.manual_seed(3)
    ws = model.mixed_styles(4, None)
    torch.manual_seed(3)  # replay the draws: z1, the coin, the cutoff, z2
    w1 = g.mapping(torch.randn(4, 8))
    torch.rand(())
    cutoff = int(torch.randint(1, g.num_ws, ()))
    w2 = g.mapping(torch.randn(4, 8))
    assert 1 <= cutoff < g.num_ws
    assert torch.allclose(ws[:, :cutoff], w1[:, None].expand(-1, cutoff, -1))
    assert torch.allclose(ws[:, cutoff:], w2[:, None].expand(-1, g.num_ws - cutoff, -1))
    assert torch.equal(mix_styles(ws, ws.flip(0), g.num_ws), ws)  # cutoff past the end: no mixing


def test_mapping_network_is_its_own_parameter_group():
    model = StyleGAN2((1, 16, 16), lr=2e-3, mapping_lr_mult=0.01, r1_interval=16, pl_interval=4, **TINY)
    opt_g, opt_d = model.configure_optimizers()
    c = 4 / 5  # lazy path-length correction of G's lr
    assert opt_g.param_groups[0]["lr"] == pytest.approx(2e-3 * c)
    assert opt_g.param_groups[1]["lr"] == pytest.approx(2e-5 * c)
    mapping = {id(p) for p in model.generator.mapping.parameters()}
    assert {id(p) for p in opt_g.param_groups[1]["params"]} == mapping
    assert opt_d.param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))
    absolute = StyleGAN2((1, 16, 16), mapping_lr=1e-5, pl_weight=0, **TINY).configure_optimizers()[0]
    assert absolute.param_groups[1]["lr"] == pytest.approx(1e-5)


def test_map_latent_and_sample_from_w_reproduce_sample():
    torch.manual_seed(0)
    model = StyleGAN2((1, 16, 16), **TINY)
    z = torch.randn(2, 8)
    w = model.map_latent(z)
    assert w.shape == (2, 8) and model.latent_spaces == ("z", "w")
    direct = model.sample(2, noise=z, noise_mode="const")
    assert torch.allclose(model.sample_from_w(w), direct, atol=1e-6)


@pytest.mark.parametrize("key,value", [("w_dim", 0), ("upsample", "nearest"), ("mixing_prob", 1.5),
                                       ("r1_interval", 0), ("noise_mode", "loud"), ("truncation_psi", 2.0)])
def test_impossible_values_name_their_key(key, value):
    with pytest.raises(ConfigError, match=f"model.{key}"):
        StyleGAN2((1, 16, 16), **{**TINY, key: value})
    with pytest.raises(ConfigError, match="data.resolution"):
        StyleGAN2((1, 28, 28), **TINY)
