"""The DDPM UNet and the embeddings it shares with later time-conditioned networks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from difgan.errors import ConfigError
from difgan.models.ddpm import DDPM
from difgan.nets.embeddings import (
    ClassEmbedding,
    SinusoidalEmbedding,
    TimestepEmbedding,
    sinusoidal_embedding,
)
from difgan.nets.unet import AttentionBlock, UNet, norm_groups


def tiny(**kw) -> dict:
    return {
        "channels": 8,
        "channel_mult": (1, 2),
        "num_res_blocks": 1,
        "attention_resolutions": [],
        "dropout": 0.0,
        **kw,
    }


def test_ddpm_cifar_config_builds_ho_et_als_35_7m_parameter_network(compose_run):
    from difgan.build import build_model

    cfg = compose_run(["model=ddpm_cifar", "data=cifar10"])
    model = build_model(cfg.model, (3, 32, 32), 0)
    n = sum(p.numel() for p in model.unet.parameters())
    assert abs(n - 35.7e6) / 35.7e6 < 0.005, n
    assert model.unet.attention_at == [16] and len(model.unet.down) == 4
    assert model.num_timesteps == 1000 and model.lr == 2e-4 and model.ema.decay == 0.9999
    assert model.unet.down[0].blocks[0].dropout.p == 0.1
    assert model.schedule.terminal_signal() == pytest.approx(0.00635, rel=1e-2)


@pytest.mark.parametrize(
    "resolution,channels,mult,attention",
    [
        (28, 1, (1, 2, 2), "all"),
        (32, 3, (1, 2, 2, 2), "all"),
        (64, 3, (1, 2, 4), [32, 16]),
        (96, 1, (1, 1, 2, 2), [24, 12]),
    ],
)
def test_unet_keeps_the_image_shape_at_every_supported_size(resolution, channels, mult, attention):
    net = UNet(
        channels,
        resolution,
        channels=8,
        channel_mult=mult,
        num_res_blocks=1,
        attention_resolutions=attention,
        dropout=0.1,
        num_classes=3,
    )
    expected = [resolution // 2**i for i in range(len(mult))] if attention == "all" else attention
    assert net.attention_at == expected
    x = torch.randn(2, channels, resolution, resolution)
    out = net(x, torch.tensor([0, 999]), torch.tensor([1, 3]))
    assert out.shape == x.shape
    assert torch.all(out == 0)  # zero-initialised output layer: the loss starts at E[eps^2] = 1


def randomize_zero_layers(net: torch.nn.Module) -> torch.nn.Module:
    """Give the zero-initialised layers (residual outputs, attention projections, output conv) weights, so
    every input path reaches the output."""
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.normal_(0.0, 0.1)
    return net


def test_output_depends_on_time_and_label_and_null_class_is_shared():
    torch.manual_seed(0)
    net = randomize_zero_layers(UNet(1, 16, num_classes=4, **tiny())).eval()
    x = torch.randn(1, 1, 16, 16).expand(3, -1, -1, -1)
    by_t = net(x, torch.tensor([0, 500, 999]), torch.tensor([1, 1, 1]))
    assert not torch.allclose(by_t[0], by_t[1]) and not torch.allclose(by_t[1], by_t[2])
    t = torch.tensor([5, 5, 5])
    by_label = net(x, t, torch.tensor([0, 1, 4]))
    assert not torch.allclose(by_label[0], by_label[1])
    null = net(x, t, None)  # no labels, labels == num_classes and unlabelled (-1) are all the null class
    assert torch.allclose(null, by_label[2:3].expand(3, -1, -1, -1), atol=1e-6)
    assert torch.allclose(net(x, t, torch.tensor([-1, -1, -1])), null, atol=1e-6)
    assert net.null_label == 4 and UNet(1, 16, **tiny()).null_label is None


def test_attention_equals_softmax_attention_written_out():
    torch.manual_seed(1)
    for heads in (1, 2):
        block = AttentionBlock(8, num_heads=heads, max_groups=4)
        torch.nn.init.normal_(block.proj.weight, std=0.2)
        torch.nn.init.normal_(block.proj.bias, std=0.2)
        x = torch.randn(2, 8, 4, 4)
        B, C, H, W = x.shape
        d = C // heads
        # per position: qkv = W x + b, channels ordered (q | k | v), each split into heads
        n = torch.nn.functional.group_norm(x, 4, block.norm.weight, block.norm.bias, block.norm.eps)
        qkv = torch.einsum("oc,bcp->bop", block.qkv.weight, n.reshape(B, C, H * W))
        qkv = qkv + block.qkv.bias[None, :, None]
        q, k, v = qkv.reshape(B, 3, heads, d, H * W).unbind(1)  # (B, heads, d, N)
        w = torch.softmax(torch.einsum("bhdi,bhdj->bhij", q, k) / math.sqrt(d), dim=-1)
        h = torch.einsum("bhij,bhdj->bhdi", w, v).reshape(B, C, H * W)
        out = torch.einsum("oc,bcp->bop", block.proj.weight, h) + block.proj.bias[None, :, None]
        assert torch.allclose(block(x), x + out.reshape(B, C, H, W), atol=1e-5)


def test_norm_groups_divide_the_width():
    assert norm_groups(128) == 32 and norm_groups(8) == 8 and norm_groups(48) == 24 and norm_groups(3) == 3


def test_sinusoidal_embedding_values():
    t = torch.tensor([0, 1, 10, 999])
    emb = sinusoidal_embedding(t, 16)
    assert emb.shape == (4, 16)
    assert torch.allclose(emb[0, :8], torch.zeros(8)) and torch.allclose(emb[0, 8:], torch.ones(8))
    freqs = torch.exp(-math.log(10000.0) * torch.arange(8) / 7)
    assert torch.allclose(emb[2], torch.cat([torch.sin(10 * freqs), torch.cos(10 * freqs)]), atol=1e-5)
    assert sinusoidal_embedding(t, 15).shape == (4, 15)
    # fractional t (continuous-time models, SinusoidalEmbedding's scale): the same formula, not rounded
    half = sinusoidal_embedding(torch.tensor([0.5, 2.25]), 4)
    args = torch.tensor([[0.5], [2.25]]) * torch.tensor([1.0, 1e-4])  # f_i = 10000^(-i / (h - 1)), h = 2
    expected = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    assert torch.allclose(half, expected, atol=1e-6)
    assert not torch.allclose(half[0], sinusoidal_embedding(torch.tensor([0]), 4)[0], atol=1e-3)
    assert not torch.allclose(half[0], sinusoidal_embedding(torch.tensor([1]), 4)[0], atol=1e-3)
    scaled = SinusoidalEmbedding(4, scale=1000.0)(torch.tensor([0.0005]))
    assert torch.allclose(scaled, half[:1], atol=1e-5)
    emb_mlp = TimestepEmbedding(16)
    assert emb_mlp(t).shape == (4, 64)


def test_class_embedding_label_dropout():
    emb = ClassEmbedding(10, 4)
    labels = torch.arange(10).repeat(1000)
    assert torch.equal(emb.drop_labels(labels, 0.0), labels)
    dropped = emb.drop_labels(labels, 0.25, generator=torch.Generator().manual_seed(0))
    frac = (dropped == 10).float().mean().item()
    assert abs(frac - 0.25) < 0.02 and torch.equal(dropped[dropped != 10], labels[dropped != 10])
    assert emb(None, batch_size=3).shape == (3, 4)


@pytest.mark.parametrize(
    "unet,shape,key",
    [
        (tiny(channel_mult=(1, 2, 2, 2)), (1, 28, 28), "model.unet.channel_mult"),
        (tiny(attention_resolutions=[16]), (1, 28, 28), "model.unet.attention_resolutions"),
        (tiny(attention_resolutions="some"), (1, 28, 28), "model.unet.attention_resolutions"),
        (tiny(attention_heads=3), (1, 28, 28), "model.unet"),
        (tiny(dropout=1.5), (1, 28, 28), "model.unet"),
        (tiny(width=3), (1, 28, 28), "model.unet.width"),
    ],
)
def test_impossible_networks_are_config_errors(unet, shape, key):
    with pytest.raises(ConfigError) as info:
        DDPM(shape, unet=unet)
    assert info.value.key == key


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"timesteps": 0}, "model.timesteps"),
        ({"schedule": "sigmoid"}, "model.schedule"),
        ({"beta_end": 2.0}, "model.beta_start"),
        ({"cond_drop_prob": 1.0}, "model.cond_drop_prob"),
        ({"lr": 0.0}, "model.lr"),
        ({"sampling": {"sampler": "euler"}}, "model.sampling.sampler"),
        ({"sampling": {"sampling_steps": 0}}, "model.sampling.sampling_steps"),
        ({"sampling": {"eta": 2.0}}, "model.sampling.eta"),
        ({"sampling": {"guidance_scale": 3.0}}, "model.sampling.guidance_scale"),  # unconditional model
    ],
)
def test_impossible_model_values_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError) as info:
        DDPM((1, 16, 16), unet=tiny(), **kwargs)
    assert info.value.key == key


def test_every_parameter_gets_a_gradient():
    """No dead branches: one loss reaches every weight (once the zero-initialised layers are non-zero)."""
    torch.manual_seed(2)
    net = randomize_zero_layers(UNet(1, 16, num_classes=2, **tiny(attention_resolutions="all")))
    x, t = torch.randn(4, 1, 16, 16), torch.randint(0, 1000, (4,))
    F.mse_loss(net(x, t, torch.tensor([0, 1, 2, 0])), torch.randn_like(x)).backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None]
    assert not no_grad, no_grad
