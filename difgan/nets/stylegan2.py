"""StyleGAN2 generator and discriminator (Karras et al. 2020, "Analyzing and Improving the Image Quality of
StyleGAN"), written from the paper in plain PyTorch: no custom CUDA ops, runs on CPU and GPU alike.

Generator = mapping network z -> w, then synthesis network ws -> image:
- mapping: pixel-norm of z (and of the label embedding when class-conditional, concatenated to z), then
  ``mapping_layers`` equalized-lr linear layers with leaky ReLU(0.2); its learning-rate multiplier (the
  paper's 0.01) is applied by the training module as an optimizer parameter group (under Adam the same as the
  paper's runtime weight scaling, see ``difgan.models.stylegan2``). A running mean of w (``w_avg``, a buffer)
  serves the truncation trick.
- synthesis: a learned 4x4 constant, then per resolution 4, 8, ..., R a block of modulated and demodulated 3x3
  convolutions (the first of each block >= 8 px upsamples 2x), each followed by per-pixel noise with a learned
  strength, a bias and leaky ReLU; every block adds its toRGB (modulated 1x1, no demodulation) to the
  upsampled running image ("skip" architecture). ``num_ws = 2 log2(R) - 2`` style vectors: block r's
  convolutions use consecutive ws and its toRGB shares the index of the next block's first convolution, as in
  the paper's code.
- upsampling: ``upsample="fir"`` (default) is the paper's: a stride-2 transposed convolution followed by the
  fixed low-pass FIR filter [1, 3, 3, 1] (outer product, normalised, gain 4); ``"bilinear"`` upsamples the
  features by bilinear interpolation before a plain modulated 3x3 convolution (4x the multiply-adds, smoother
  but blurrier early images; what plain-PyTorch ports such as stylegan2-pytorch do).

Discriminator ("resnet" architecture): fromRGB (1x1) at the image's resolution, then per resolution R, ..., 8
a residual block (3x3 conv, 3x3 conv with 2x FIR downsampling, plus a 1x1 downsampled skip, both scaled by
sqrt(1/2)), then at 4x4: minibatch standard deviation (``mbstd_group_size``, ``mbstd_features``), a 3x3 conv,
a dense layer and the output layer. Class-conditional by projection (Miyato and Koyama 2018): the output layer
gives ``cmap_dim`` features whose dot product with a label embedding, over sqrt(cmap_dim), is the logit.

Widths: ``channels_at(res) = min(channel_base // res, channel_max)`` (the paper's config F: 32768 and 512).
Every weight is N(0, 1) at init and scaled at run time by 1/sqrt(fan_in) (equalized learning rate), times
sqrt(2) after leaky ReLU, so activations keep unit scale through the network.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difgan.nets.minibatch_stddev import minibatch_stddev

NOISE_MODES = ("random", "const", "none")
UPSAMPLE_MODES = ("fir", "bilinear")
LRELU_GAIN = math.sqrt(2.0)


def stylegan_resolutions(resolution: int) -> list[int]:
    """[4, 8, ..., resolution] for a power-of-two resolution in 16..1024, else ValueError."""
    log = math.log2(resolution) if resolution > 0 else 0.5
    if log != int(log) or not 4 <= log <= 10:
        raise ValueError(f"StyleGAN2 makes power-of-two images from 16 to 1024 px, not {resolution}")
    return [2**i for i in range(2, int(log) + 1)]


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    return max(1, min(channel_base // res, channel_max))


# ----------------------------------------------------------------------------- FIR filtering
def fir_kernel(taps=(1, 3, 3, 1)) -> Tensor:
    """The separable low-pass filter's 2-D kernel, normalised to sum 1."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[:, None] * k[None, :]
    return k / k.sum()


def fir_filter(x: Tensor, kernel: Tensor, pad: tuple[int, int], gain: float = 1.0) -> Tensor:
    """Depthwise convolution of every channel with ``kernel`` (symmetric), after padding (before, after) on
    both spatial axes."""
    c = x.shape[1]
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    w = (kernel * gain).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(x, w, groups=c)


def upsample_fir(x: Tensor, kernel: Tensor) -> Tensor:
    """2x upsampling: zero insertion then the FIR filter with gain 4 (the skip path's image upsampling)."""
    c = x.shape[1]
    w = (kernel * 4).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    k = kernel.shape[-1]
    return F.conv_transpose2d(x, w, stride=2, padding=(k - 2 + 1) // 2, groups=c)


# ----------------------------------------------------------------------------- equalized learning rate
class EqualizedLinear(nn.Module):
    """y = x (w * lr_mult / sqrt(in))^T + b * lr_mult, w ~ N(0, 1 / lr_mult^2): the same function as a plainly
    initialised layer, with every weight learning at the same rate under Adam (Karras et al. 2018)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mult: float = 1.0, activation: str = "linear"):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mult)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mult)) if bias else None
        self.weight_gain = lr_mult / math.sqrt(in_features)
        self.lr_mult, self.activation = lr_mult, activation

    def forward(self, x: Tensor) -> Tensor:
        b = self.bias * self.lr_mult if self.bias is not None else None
        x = F.linear(x, self.weight * self.weight_gain, b)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.activation == "lrelu" else x

    def extra_repr(self) -> str:
        return (f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, lr_mult={self.lr_mult:g}, "
                f"activation={self.activation}")


class EqualizedConv2d(nn.Module):
    """A conv with N(0, 1) weights scaled by 1/sqrt(in * k * k) at run time; ``down=True`` filters with the
    FIR kernel and strides by 2 (the discriminator's downsampling); ``activation`` lrelu multiplies by
    sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.activation, self.down = activation, down
        self.register_buffer("fir", fir_kernel(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight * self.weight_gain
        k = w.shape[-1]
        if self.down:
            # blur so the strided conv lands on the filtered grid: pads make H -> H / 2 for any kernel size
            p = (self.fir.shape[-1] - 2) + (k - 1)
            x = fir_filter(x, self.fir, ((p + 1) // 2, p // 2))
            x = F.conv2d(x, w, stride=2)
        else:
            x = F.conv2d(x, w, padding=k // 2)
        if self.bias is not None:
            x = x + self.bias[None, :, None, None]
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.activation == "lrelu" else x


# ----------------------------------------------------------------------------- modulated convolution
def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool = True,
                     up: bool = False) -> Tensor:
    """Karras et al. 2020, eq. 1-3, as ONE grouped convolution over the batch.

    ``x`` (B, Cin, H, W); ``weight`` (Cout, Cin, k, k); ``styles`` (B, Cin). Each sample's weight is
    ``weight * styles[b]`` over input channels, then (``demodulate``) divided per output channel by the square
    root of the sum of its squares, so unit-variance inputs give unit-variance outputs. ``up=True`` is a
    stride-2 transposed convolution (H -> 2H + k - 2; the caller low-pass filters), otherwise same-padded.
    """
    b, cin, h, w_ = x.shape
    cout, _, k, _ = weight.shape
    wts = weight[None] * styles[:, None, :, None, None]  # (B, Cout, Cin, k, k)
    if demodulate:
        wts = wts * torch.rsqrt(wts.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
    x = x.reshape(1, b * cin, h, w_)
    if up:
        wts = wts.transpose(1, 2).reshape(b * cin, cout, k, k)
        out = F.conv_transpose2d(x, wts, stride=2, groups=b)
    else:
        out = F.conv2d(x, wts.reshape(b * cout, cin, k, k), padding=k // 2, groups=b)
    return out.reshape(b, cout, *out.shape[2:])


def draw_layer_noise(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    return torch.randn(shape, generator=generator, device=generator.device).to(like)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally upsampling 2x), noise with learned strength, bias, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False,
                 upsample: str = "fir"):
        super().__init__()
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)  # styles start at 1
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("fir", fir_kernel(), persistent=False)
        self.up, self.upsample, self.resolution = up, upsample, resolution

    def forward(self, x: Tensor, w: Tensor, noise_mode: str = "random",
                generator: torch.Generator | None = None) -> Tensor:
        styles = self.affine(w)
        if self.up and self.upsample == "bilinear":
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = modulated_conv2d(x, self.weight, styles)
        elif self.up:
            x = modulated_conv2d(x, self.weight, styles, up=True)
            x = fir_filter(x, self.fir, (1, 1), gain=4.0)  # 2H + 1 -> 2H, the low-pass of the upsampling
        else:
            x = modulated_conv2d(x, self.weight, styles)
        if noise_mode == "random":
            noise = draw_layer_noise((x.shape[0], 1, self.resolution, self.resolution), x, generator)
            x = x + noise * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        x = x + self.bias[None, :, None, None]
        return F.leaky_relu(x, 0.2) * LRELU_GAIN


class ToRGB(nn.Module):
    """Modulated 1x1 convolution to the image channels, without demodulation, plus bias."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        return modulated_conv2d(x, self.weight, styles, demodulate=False) + self.bias[None, :, None, None]


class SynthesisBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 upsample: str):
        super().__init__()
        self.resolution = resolution
        if resolution == 4:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
            self.conv0 = None
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True,
                                        upsample=upsample)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGB(out_channels, img_channels, w_dim)
        self.register_buffer("fir", fir_kernel(), persistent=False)
        self.num_conv = 1 if self.conv0 is None else 2

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor, noise_mode: str,
                generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """``ws`` (B, num_conv + 1, w_dim): one per convolution, then the toRGB's."""
        if self.conv0 is None:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode, generator)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, generator)
            x = self.conv1(x, ws[:, 1], noise_mode, generator)
        y = self.torgb(x, ws[:, self.num_conv])
        img = y if img is None else upsample_fir(img, self.fir) + y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, upsample: str = "fir"):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"unknown upsample {upsample!r}; valid: {', '.join(UPSAMPLE_MODES)}")
        self.resolutions = stylegan_resolutions(resolution)
        self.w_dim, self.resolution, self.img_channels = w_dim, resolution, img_channels
        self.blocks = nn.ModuleList()
        in_ch = 0
        for res in self.resolutions:
            out_ch = channels_at(res, channel_base, channel_max)
            self.blocks.append(SynthesisBlock(in_ch, out_ch, w_dim, res, img_channels, upsample))
            in_ch = out_ch
        # block i's convolutions start at w index 2i - 1 (0 for the 4x4 block); its toRGB takes the next one
        self.num_ws = 2 * len(self.resolutions)

    def w_indices(self) -> list[int]:
        starts, idx = [], 0
        for block in self.blocks:
            starts.append(idx)
            idx += block.num_conv
        return starts

    def forward(self, ws: Tensor, noise_mode: str = "random",
                generator: torch.Generator | None = None) -> Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"unknown noise_mode {noise_mode!r}; valid: {', '.join(NOISE_MODES)}")
        x = img = None
        for block, start in zip(self.blocks, self.w_indices()):
            x, img = block(x, img, ws[:, start:start + block.num_conv + 1], noise_mode, generator)
        return img


def pixel_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


class MappingNetwork(nn.Module):
    """z (and a label) -> w: pixel norm, then ``num_layers`` equalized-lr leaky-ReLU layers."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int = 8, num_classes: int = 0,
                 lr_mult: float = 1.0):
        super().__init__()
        self.z_dim, self.w_dim, self.num_classes = z_dim, w_dim, num_classes
        self.embed = EqualizedLinear(num_classes, w_dim) if num_classes else None
        dims = [z_dim + (w_dim if num_classes else 0)] + [w_dim] * num_layers
        self.layers = nn.Sequential(*(EqualizedLinear(a, b, lr_mult=lr_mult, activation="lrelu")
                                      for a, b in zip(dims[:-1], dims[1:])))

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        x = pixel_norm(z)
        if self.embed is not None:
            if labels is None:
                raise ValueError("a class-conditional mapping network needs labels")
            y = self.embed(F.one_hot(labels.long(), self.num_classes).to(z.dtype))
            x = torch.cat([x, pixel_norm(y)], dim=1)
        return self.layers(x)


def truncate(w: Tensor, w_avg: Tensor, psi: float) -> Tensor:
    """The truncation trick: w_avg + psi (w - w_avg); psi=1 leaves w alone, psi=0 gives w_avg."""
    return w if psi == 1 else w_avg.to(w.dtype).lerp(w, psi)


def mix_styles(ws: Tensor, ws2: Tensor, cutoff: int) -> Tensor:
    """Style mixing: layers [0, cutoff) take ``ws``, layers from ``cutoff`` on take ``ws2``."""
    if cutoff >= ws.shape[1]:
        return ws
    return torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)


class StyleGAN2Generator(nn.Module):
    """z (B, z_dim) [+ labels] -> images (B, C, R, R), roughly in [-1, 1]."""

    def __init__(self, z_dim: int, w_dim: int, img_channels: int, resolution: int, mapping_layers: int = 8,
                 channel_base: int = 32768, channel_max: int = 512, num_classes: int = 0,
                 upsample: str = "fir", w_avg_beta: float = 0.995):
        super().__init__()
        self.z_dim, self.w_dim, self.num_classes = z_dim, w_dim, num_classes
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, num_classes)
        self.synthesis = SynthesisNetwork(w_dim, resolution, img_channels, channel_base, channel_max,
                                          upsample)
        self.num_ws = self.synthesis.num_ws
        self.w_avg_beta = w_avg_beta
        self.register_buffer("w_avg", torch.zeros(w_dim))  # running mean of w (truncation trick)

    def map(self, z: Tensor, labels: Tensor | None = None, truncation_psi: float = 1.0,
            update_w_avg: bool = False) -> Tensor:
        """z -> ws (B, num_ws, w_dim), the same w for every layer; ``update_w_avg`` (training) moves the
        running mean of w towards this batch's mean."""
        w = self.mapping(z, labels)
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.lerp_(w.detach().mean(0), 1.0 - self.w_avg_beta)
        w = truncate(w, self.w_avg, truncation_psi)
        return w[:, None].expand(-1, self.num_ws, -1)

    def forward(self, z: Tensor, labels: Tensor | None = None, truncation_psi: float = 1.0,
                noise_mode: str = "random", generator: torch.Generator | None = None) -> Tensor:
        return self.synthesis(self.map(z, labels, truncation_psi), noise_mode, generator)


# ----------------------------------------------------------------------------- discriminator
class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, activation="lrelu", down=True)
        self.skip = EqualizedConv2d(in_channels, out_channels, 1, bias=False, down=True)

    def forward(self, x: Tensor) -> Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


class StyleGAN2Discriminator(nn.Module):
    """images (B, C, R, R) [+ labels] -> logits (B,). ``features_and_logit`` also returns the penultimate
    features (B, channels at 4 px), which time-conditioned wrappers project onto a t embedding."""

    def __init__(self, img_channels: int, resolution: int, channel_base: int = 32768, channel_max: int = 512,
                 num_classes: int = 0, mbstd_group_size: int = 4, mbstd_features: int = 1,
                 cmap_dim: int | None = None):
        super().__init__()
        resolutions = stylegan_resolutions(resolution)[::-1]  # R, ..., 4
        ch = {r: channels_at(r, channel_base, channel_max) for r in resolutions}
        self.num_classes = num_classes
        self.mbstd_group_size, self.mbstd_features = mbstd_group_size, mbstd_features
        self.fromrgb = EqualizedConv2d(img_channels, ch[resolution], 1, activation="lrelu")
        self.blocks = nn.Sequential(*(DiscriminatorBlock(ch[r], ch[r // 2]) for r in resolutions[:-1]))
        c4 = ch[4]
        self.conv = EqualizedConv2d(c4 + mbstd_features, c4, 3, activation="lrelu")
        self.fc = EqualizedLinear(c4 * 16, c4, activation="lrelu")
        self.cmap_dim = (cmap_dim or c4) if num_classes else 1
        self.out = EqualizedLinear(c4, self.cmap_dim)
        self.embed = EqualizedLinear(num_classes, self.cmap_dim) if num_classes else None
        self.feature_dim = c4

    def features_and_logit(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self.blocks(self.fromrgb(x))
        x = minibatch_stddev(x, self.mbstd_group_size, self.mbstd_features)
        h = self.fc(self.conv(x).flatten(1))
        out = self.out(h)
        if self.embed is None:
            return h, out[:, 0]
        if labels is None:
            raise ValueError("a class-conditional discriminator needs labels")
        cmap = self.embed(F.one_hot(labels.long(), self.num_classes).to(out.dtype))
        return h, (out * cmap).sum(dim=1) / np.sqrt(self.cmap_dim)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.features_and_logit(x, labels)[1]
