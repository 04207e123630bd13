"""The clean StyleGAN2 generator (no custom CUDA ops) that GFPGAN v1.3 / v1.4 decode with, with
the spatial feature transform (SFT) of GFPGAN's `StyleGAN2GeneratorCSFT`.

Module and parameter names are those of TencentARC/GFPGAN `gfpgan/archs/stylegan2_clean_arch.py`
(`StyleGAN2GeneratorClean`) so the official state dicts load unchanged; the math is the same,
written without basicsr. Noise is explicit: each `StyleConv` draws its noise from a given
`torch.Generator` (or the global RNG, as the official code does), or uses the stored buffers.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F


def stylegan_channels(channel_multiplier: float, narrow: float) -> dict[int, int]:
    """Channels per resolution (4 ... 1024) of the official generator, `int(...)` as it rounds."""
    wide = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
            256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return {size: int(c * narrow) for size, c in wide.items()}


def draw_noise(like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Standard-normal noise `[B, 1, H, W]` for the `[B, C, H, W]` features `like`.

    Without a generator this is the official `like.new_empty(b, 1, h, w).normal_()` (the global
    RNG of `like`'s device); with one, the same draw from `generator` (on its own device, then moved).
    """
    b, _, h, w = like.shape
    if generator is None:
        return like.new_empty(b, 1, h, w).normal_()
    noise = torch.empty(b, 1, h, w, dtype=like.dtype, device=generator.device).normal_(generator=generator)
    return noise.to(like.device)


class NormStyleCode(nn.Module):
    """`x / sqrt(mean(x ** 2, dim=1) + 1e-8)` (the first layer of the style MLP)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated (and optionally demodulated) convolution, without bias.

    `weight`: `[1, C_out, C_in, k, k]`; `modulation`: Linear(num_style_feat -> C_in). A
    `sample_mode` of "upsample" / "downsample" resizes the input by 2 (bilinear) before the conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, sample_mode: Optional[str] = None, eps: float = 1e-8):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.demodulate, self.sample_mode, self.eps = demodulate, sample_mode, eps
        self.padding = kernel_size // 2
        self.modulation = nn.Linear(num_style_feat, in_channels, bias=True)
        nn.init.kaiming_normal_(self.modulation.weight, a=0, mode="fan_in", nonlinearity="linear")
        nn.init.ones_(self.modulation.bias)  # styles start at 1, as in the official initialisation
        fan_in = in_channels * kernel_size**2
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size) / math.sqrt(fan_in))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x `[B, C_in, H, W]`, style `[B, num_style_feat]` -> `[B, C_out, H', W']`."""
        b, c = x.shape[:2]
        weight = self.weight * self.modulation(style).view(b, 1, c, 1, 1)  # [B, C_out, C_in, k, k]
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + self.eps)
            weight = weight * demod.view(b, self.out_channels, 1, 1, 1)
        weight = weight.view(b * self.out_channels, c, self.kernel_size, self.kernel_size)
        if self.sample_mode == "upsample":
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        elif self.sample_mode == "downsample":
            x = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        h, w = x.shape[2:]
        # one grouped conv: each sample convolved with its own modulated weights
        out = F.conv2d(x.reshape(1, b * c, h, w), weight, padding=self.padding, groups=b)
        return out.view(b, self.out_channels, *out.shape[2:])


class StyleConv(nn.Module):
    """Modulated conv, scaled by sqrt(2), + `weight` * noise + `bias`, then LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, sample_mode: Optional[str] = None):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, kernel_size, num_style_feat,
                                              demodulate=demodulate, sample_mode=sample_mode)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.activate = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: Optional[torch.Tensor] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """`noise` `[B or 1, 1, H', W']`; None draws fresh noise (see `draw_noise`)."""
        out = self.modulated_conv(x, style) * 2**0.5
        if noise is None:
            noise = draw_noise(out, generator)
        return self.activate(out + self.weight * noise + self.bias)


class ToRGB(nn.Module):
    """Features -> RGB by a 1x1 modulated conv (no demodulation) + `bias`, plus the upsampled skip."""

    def __init__(self, in_channels: int, num_style_feat: int, upsample: bool = True):
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_channels, 3, kernel_size=1, num_style_feat=num_style_feat,
                                              demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            if self.upsample:
                skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    """The learned `[1, C, size, size]` input, repeated over the batch."""

    def __init__(self, num_channel: int, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, num_channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.repeat(batch, 1, 1, 1)


class StyleGAN2GeneratorSFT(nn.Module):
    """StyleGAN2 generator whose features are modulated by SFT conditions (scale, shift per level).

    Args:
        out_size: output resolution (a power of two).
        num_style_feat: width of the style codes.
        num_mlp: layers of the style MLP (used only when the decoder gets style codes, not latents).
        channel_multiplier, narrow: channel widths (`stylegan_channels`).
        sft_half: apply SFT to the second half of the channels only (GFPGAN v1.3 / v1.4), else to all.

    Buffers `noises.noise{i}` `[1, 1, r, r]` hold the stored noise (`randomize_noise=False`).
    """

    def __init__(self, out_size: int, num_style_feat: int = 512, num_mlp: int = 8, channel_multiplier: float = 2,
                 narrow: float = 1, sft_half: bool = False):
        super().__init__()
        self.num_style_feat, self.sft_half = num_style_feat, sft_half
        layers: list[nn.Module] = [NormStyleCode()]
        for _ in range(num_mlp):  # indices 1, 3, 5... are the Linear layers in the official keys
            layers += [nn.Linear(num_style_feat, num_style_feat), nn.LeakyReLU(negative_slope=0.2)]
        self.style_mlp = nn.Sequential(*layers)

        channels = stylegan_channels(channel_multiplier, narrow)
        self.channels = channels
        self.log_size = int(math.log(out_size, 2))
        self.num_layers = (self.log_size - 2) * 2 + 1  # StyleConvs, one noise each
        self.num_latent = self.log_size * 2 - 2  # style vectors used
        self.constant_input = ConstantInput(channels[4], size=4)
        self.style_conv1 = StyleConv(channels[4], channels[4], 3, num_style_feat)
        self.to_rgb1 = ToRGB(channels[4], num_style_feat, upsample=False)

        self.noises = nn.Module()
        for layer in range(self.num_layers):
            resolution = 2 ** ((layer + 5) // 2)
            self.noises.register_buffer(f"noise{layer}", torch.randn(1, 1, resolution, resolution))
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channels = channels[4]
        for i in range(3, self.log_size + 1):
            out_channels = channels[2**i]
            self.style_convs.append(StyleConv(in_channels, out_channels, 3, num_style_feat, sample_mode="upsample"))
            self.style_convs.append(StyleConv(out_channels, out_channels, 3, num_style_feat))
            self.to_rgbs.append(ToRGB(out_channels, num_style_feat, upsample=True))
            in_channels = out_channels

    def stored_noise(self) -> list[torch.Tensor]:
        """The stored noise buffers, one per StyleConv, in the order they are used."""
        return [getattr(self.noises, f"noise{i}") for i in range(self.num_layers)]

    def forward(self, styles: torch.Tensor, conditions: Sequence[torch.Tensor], *, input_is_latent: bool = True,
                randomize_noise: bool = True, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Decode style codes into an RGB image.

        Args:
            styles: `[B, num_latent, num_style_feat]` (one per layer) or `[B, num_style_feat]` (repeated).
            conditions: `[scale_8, shift_8, scale_16, shift_16, ...]`, SFT maps `[B, C', r, r]`
                (C' = half the level's channels with `sft_half`).
            input_is_latent: `styles` are W latents; False passes them through the style MLP first
                (as the official code does, over the tensor as given).
            randomize_noise: draw fresh noise per StyleConv (from `generator`, else the global RNG,
                in the official order: 4x4, then two per level); False uses the stored buffers.

        Returns:
            `[B, 3, out_size, out_size]`, unclamped (about [-1, 1] for a trained model).
        """
        if not input_is_latent:
            styles = self.style_mlp(styles)
        latent = styles if styles.ndim == 3 else styles.unsqueeze(1).repeat(1, self.num_latent, 1)
        noise = [None] * self.num_layers if randomize_noise else self.stored_noise()

        out = self.constant_input(latent.shape[0])
        out = self.style_conv1(out, latent[:, 0], noise=noise[0], generator=generator)
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv1, conv2, noise1, noise2, to_rgb in zip(self.style_convs[::2], self.style_convs[1::2], noise[1::2],
                                                        noise[2::2], self.to_rgbs):
            out = conv1(out, latent[:, i], noise=noise1, generator=generator)
            if i < len(conditions):  # SFT: features * scale + shift
                if self.sft_half:
                    same, sft = torch.split(out, out.size(1) // 2, dim=1)
                    out = torch.cat([same, sft * conditions[i - 1] + conditions[i]], dim=1)
                else:
                    out = out * conditions[i - 1] + conditions[i]
            out = conv2(out, latent[:, i + 1], noise=noise2, generator=generator)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip
