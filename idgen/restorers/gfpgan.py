"""GFPGAN v1.3 / v1.4 (TencentARC/GFPGAN `GFPGANv1Clean`): a U-Net encoder whose features steer a
StyleGAN2 decoder through SFT, loading the official `GFPGANv1.4.pth` / `GFPGANv1.3.pth` unchanged.

    from idgen.restorers.gfpgan import load_gfpgan
    model = load_gfpgan("GFPGANv1.4.pth")            # eval, float32, CPU
    face = model(x, generator=torch.Generator().manual_seed(0))  # x: [B, 3, 512, 512] RGB in [-1, 1]

Module and parameter names are the official ones (`gfpgan/archs/gfpganv1_clean_arch.py`); the
code is idgen's own, without basicsr.

Noise: the official `GFPGANer.enhance` calls `gfpgan(face, return_rgb=False, weight=weight)[0]`,
so `randomize_noise=True` (the default) and every StyleConv draws fresh Gaussian noise from the
global RNG; its `weight` goes to `**kwargs` and is ignored by `GFPGANv1Clean`. `GFPGAN.forward`
does the same draws, in the same order, from `generator` when one is given (reproducible), else
from the global RNG; `randomize_noise=False` uses the noise stored in the file instead.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import nn
from torch.nn import functional as F

from idgen.checkpoint import (
    PathOrStateDict, assign_weights, describe_source, first_mismatch, load_checkpoint, module_state_shapes,
    resolve_state_dict, unwrap_training_weights,
)
from idgen.errors import ModelNotFoundError
from idgen.restorers.stylegan2 import StyleGAN2GeneratorSFT, stylegan_channels
from idgen.validation import InvalidArgumentError

#: The released files this architecture loads (v1.3 and v1.4 share it).
GFPGAN_FILES = ("GFPGANv1.4.pth", "GFPGANv1.3.pth")
GFPGAN_HINT = ("Download GFPGANv1.4.pth (or GFPGANv1.3.pth) from the TencentARC/GFPGAN releases: "
               "https://github.com/TencentARC/GFPGAN/releases/tag/v1.3.0 (v1.3.4 for v1.4).")
#: The official GFPGANer(arch="clean", channel_multiplier=2) constructor arguments.
GFPGAN_CONFIG = {"out_size": 512, "num_style_feat": 512, "channel_multiplier": 2, "decoder_load_path": None,
                 "fix_decoder": False, "num_mlp": 8, "input_is_latent": True, "different_w": True, "narrow": 1,
                 "sft_half": True}
#: The wrappers official training files keep the weights under, in the order GFPGANer picks them.


class ResBlock(nn.Module):
    """Residual block that resizes by 2 (bilinear): conv3x3 -> resize -> conv3x3, + resized 1x1 skip."""

    def __init__(self, in_channels: int, out_channels: int, mode: str = "down"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.scale_factor = 0.5 if mode == "down" else 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), negative_slope=0.2)
        out = F.interpolate(out, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        out = F.leaky_relu(self.conv2(out), negative_slope=0.2)
        x = F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        return out + self.skip(x)


def _sft_branch(channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(channels, out_channels, 3, 1, 1))


class GFPGAN(nn.Module):
    """GFPGAN v1.3 / v1.4 face restorer (`GFPGANv1Clean`), defaults = the released models.

    Args:
        out_size: input and output resolution, a power of two in [8, 1024] (512 released).
        num_style_feat: width of the style codes (512).
        channel_multiplier, narrow: channel widths; the U-Net uses half the decoder's (`narrow / 2`).
        decoder_load_path: a StyleGAN2 checkpoint (`params_ema`) to start the decoder from (training).
        fix_decoder: freeze the decoder's parameters (training).
        num_mlp: layers of the decoder's style MLP (stored, unused when `input_is_latent`).
        input_is_latent: the encoder's codes are W latents (True released).
        different_w: one latent per decoder layer (True released) rather than one for all.
        sft_half: SFT on half of the decoder channels (True released).

    `forward(x)`: `[B, 3, out_size, out_size]` RGB in [-1, 1] -> the restored face, same shape,
    unclamped (about [-1, 1]; the official `tensor2img` clamps when converting to uint8).
    """

    def __init__(self, out_size: int = 512, num_style_feat: int = 512, channel_multiplier: float = 2,
                 decoder_load_path: Optional[os.PathLike] = None, fix_decoder: bool = False, num_mlp: int = 8,
                 input_is_latent: bool = True, different_w: bool = True, narrow: float = 1, sft_half: bool = True):
        super().__init__()
        _check_config(out_size, num_style_feat, channel_multiplier, narrow, sft_half)
        self.out_size, self.num_style_feat = out_size, num_style_feat
        self.input_is_latent, self.different_w = input_is_latent, different_w
        self.log_size = int(math.log2(out_size))
        channels = stylegan_channels(channel_multiplier, narrow * 0.5)  # the U-Net is half as wide

        self.conv_body_first = nn.Conv2d(3, channels[out_size], 1)
        self.conv_body_down = nn.ModuleList()
        in_channels = channels[out_size]
        for i in range(self.log_size, 2, -1):  # out_size -> 4
            self.conv_body_down.append(ResBlock(in_channels, channels[2 ** (i - 1)], mode="down"))
            in_channels = channels[2 ** (i - 1)]
        self.final_conv = nn.Conv2d(in_channels, channels[4], 3, 1, 1)
        self.conv_body_up = nn.ModuleList()
        in_channels = channels[4]
        for i in range(3, self.log_size + 1):  # 4 -> out_size
            self.conv_body_up.append(ResBlock(in_channels, channels[2**i], mode="up"))
            in_channels = channels[2**i]
        # intermediate RGB heads: trained, stored in the files, not part of the restored output
        self.toRGB = nn.ModuleList(nn.Conv2d(channels[2**i], 3, 1) for i in range(3, self.log_size + 1))
        num_codes = (self.log_size * 2 - 2) if different_w else 1
        self.final_linear = nn.Linear(channels[4] * 4 * 4, num_codes * num_style_feat)

        self.stylegan_decoder = StyleGAN2GeneratorSFT(out_size, num_style_feat=num_style_feat, num_mlp=num_mlp,
                                                      channel_multiplier=channel_multiplier, narrow=narrow,
                                                      sft_half=sft_half)
        if decoder_load_path:
            self._load_decoder(decoder_load_path)
        if fix_decoder:
            self.stylegan_decoder.requires_grad_(False)

        self.condition_scale = nn.ModuleList()
        self.condition_shift = nn.ModuleList()
        for i in range(3, self.log_size + 1):
            c = channels[2**i]
            sft_channels = c if sft_half else 2 * c
            self.condition_scale.append(_sft_branch(c, sft_channels))
            self.condition_shift.append(_sft_branch(c, sft_channels))

    def _load_decoder(self, path: os.PathLike) -> None:
        what = f"StyleGAN2 decoder checkpoint {str(path)!r}"
        state_dict = unwrap_training_weights(load_checkpoint(path), what)
        first_mismatch(self.stylegan_decoder, state_dict, what)
        self.stylegan_decoder.load_state_dict({k: v.float() for k, v in state_dict.items()})

    def check_input(self, x: object) -> None:
        """Raise `InvalidArgumentError` unless `x` is a floating `[B, 3, out_size, out_size]` tensor."""
        if not isinstance(x, torch.Tensor):
            raise InvalidArgumentError(f"GFPGAN input: expected a torch.Tensor [B, 3, {self.out_size}, "
                                       f"{self.out_size}], got {type(x).__name__}.")
        size = self.out_size
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (size, size) or x.shape[0] == 0:
            raise InvalidArgumentError(
                f"GFPGAN input: expected shape [B, 3, {size}, {size}] (B >= 1, RGB in [-1, 1]), got "
                f"{list(x.shape)}; resize aligned faces to {size}x{size} first.")
        if not x.is_floating_point():
            raise InvalidArgumentError(f"GFPGAN input: expected a floating-point tensor in [-1, 1], got {x.dtype}.")

    def forward(self, x: torch.Tensor, *, generator: Optional[torch.Generator] = None,
                randomize_noise: bool = True) -> torch.Tensor:
        """Restore faces.

        Args:
            x: `[B, 3, out_size, out_size]` RGB in [-1, 1] (aligned faces; cast to the weights' dtype).
            generator: source of the decoder's noise (reproducible output); None draws from the
                global RNG as the official code does.
            randomize_noise: False uses the stored noise buffers (deterministic, `generator` unused).

        Returns:
            `[B, 3, out_size, out_size]` RGB, unclamped (about [-1, 1]).

        Raises:
            InvalidArgumentError: `x` is not a floating `[B, 3, out_size, out_size]` tensor.
        """
        self.check_input(x)
        x = x.to(self.conv_body_first.weight.dtype)
        # 1. Encoder: out_size -> 4, keeping the skips
        feat = F.leaky_relu(self.conv_body_first(x), negative_slope=0.2)
        skips = []
        for down in self.conv_body_down:
            feat = down(feat)
            skips.insert(0, feat)
        feat = F.leaky_relu(self.final_conv(feat), negative_slope=0.2)
        # 2. Style codes
        styles = self.final_linear(feat.flatten(1))
        if self.different_w:
            styles = styles.view(styles.size(0), -1, self.num_style_feat)
        # 3. Decoder-side U-Net: SFT scale and shift per level
        conditions = []
        for skip, up, scale, shift in zip(skips, self.conv_body_up, self.condition_scale, self.condition_shift):
            feat = up(feat + skip)
            conditions += [scale(feat), shift(feat)]
        # 4. StyleGAN2 decoder
        return self.stylegan_decoder(styles, conditions, input_is_latent=self.input_is_latent,
                                     randomize_noise=randomize_noise, generator=generator)


def _check_config(out_size, num_style_feat, channel_multiplier, narrow, sft_half) -> None:
    if not isinstance(out_size, int) or isinstance(out_size, bool) or out_size < 8 or out_size > 1024 \
            or out_size & (out_size - 1):
        raise InvalidArgumentError(f"GFPGAN out_size: expected a power of two in [8, 1024], got {out_size!r}.")
    if not isinstance(num_style_feat, int) or num_style_feat < 1:
        raise InvalidArgumentError(f"GFPGAN num_style_feat: expected a positive integer, got {num_style_feat!r}.")
    if not narrow > 0 or not channel_multiplier > 0:
        raise InvalidArgumentError(f"GFPGAN narrow / channel_multiplier: expected > 0, got {narrow!r} / "
                                   f"{channel_multiplier!r}.")
    unet = stylegan_channels(channel_multiplier, narrow * 0.5)
    decoder = stylegan_channels(channel_multiplier, narrow)
    for size in (2**i for i in range(2, int(math.log2(out_size)) + 1)):
        conditioned = decoder[size] // 2 if sft_half else decoder[size]  # the decoder channels SFT modulates
        sft = unet[size] if sft_half else 2 * unet[size]
        if unet[size] < 1 or decoder[size] % 2 or conditioned != sft:
            raise InvalidArgumentError(
                f"GFPGAN narrow={narrow!r}, channel_multiplier={channel_multiplier!r}, sft_half={sft_half!r}: at "
                f"{size}x{size} the SFT maps have {sft} channels for {conditioned} decoder channels ({unet[size]} "
                f"encoder / {decoder[size]} decoder); choose widths where they match (the decoder's even).")


def gfpgan_state_shapes(config: Optional[Mapping[str, object]] = None) -> dict[str, tuple[int, ...]]:
    """`{key: shape}` of the state dict of `GFPGAN(**config)` (the released sizes by default)."""
    with torch.device("meta"):
        model = GFPGAN(**_full_config(config))
    return module_state_shapes(model)


def _full_config(config: Optional[Mapping[str, object]]) -> dict:
    config = dict(config or {})
    unknown = sorted(set(config) - set(GFPGAN_CONFIG))
    if unknown:
        raise InvalidArgumentError(
            f"GFPGAN config: unknown key {unknown[0]!r}; expected some of {sorted(GFPGAN_CONFIG)}.")
    return {**GFPGAN_CONFIG, **config, "decoder_load_path": None}  # the whole model is loaded: no decoder file


def load_gfpgan(source: PathOrStateDict, config: Optional[Mapping[str, object]] = None) -> GFPGAN:
    """`GFPGAN` from the official `GFPGANv1.4.pth` / `GFPGANv1.3.pth` (or a state dict), in eval
    mode, float32, on CPU (meta tensors stay meta: nothing is allocated).

    Args:
        source: path (torch pickle read with weights_only, or `.safetensors`) or state dict; the
            weights may sit under `params_ema` (taken first, as GFPGANer does), `params` or `state_dict`.
        config: `GFPGAN` arguments that differ from the released ones (`GFPGAN_CONFIG`).

    Raises:
        ModelNotFoundError: the file does not exist (the message says where to get it).
        CheckpointError: unreadable, or a key missing / misshaped / unexpected (the first named).
        InvalidArgumentError: `config` has an unknown key or impossible sizes.
    """
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise ModelNotFoundError(f"GFPGAN checkpoint {str(source)!r} does not exist. {GFPGAN_HINT}")
    what = f"GFPGAN checkpoint {describe_source(source)}"
    config = _full_config(config)
    state_dict = unwrap_training_weights(resolve_state_dict(source), what)
    with torch.device("meta"):
        model = GFPGAN(**config)
    first_mismatch(model, state_dict, what)
    # every entry (the noise buffers included) is in the file: nothing to recompute after `assign`
    assign_weights(model, state_dict)
    if config["fix_decoder"]:
        model.stylegan_decoder.requires_grad_(False)
    return model
