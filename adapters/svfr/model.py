"""SVFR's additions to Stable Video Diffusion's spatio-temporal UNet (Wang et al. 2025).

- **Widened input** (`widen_conv_in`): SVD's UNet reads 8 channels (noisy latent + conditioning
  image latent); SVFR's reads 12: noisy latent, degraded-clip latent, reference-frame latent. The 4
  new input channels start at zero (official `infer.py`), so the widened UNet equals the original on
  the original channels until trained.
- **Task embedding** (`task_vector`): the three values SVD embeds as "added time ids" (fps, motion
  bucket, noise augmentation) carry the task instead: a multi-hot `[bfr, colorization, inpainting]`.
- **Identity tokens** (`IDProjection`, official `IDProjConvModel`, keys `project1024.weight`,
  `final_norm.*`): a 1x1 convolution of ArcFace features `[B, 512, h, w]` to the cross-attention
  width, flattened to h·w tokens and layer-normalised. They replace SVD's CLIP image token in every
  cross-attention; the negative branch of classifier-free guidance gets zeros. The released
  `id_linear.pth` was trained on the 7x7 `layer4` map (before the final BN/FC) of insightface's
  glint360k iresnet100 on the aligned 112 px reference; a 512-d embedding gives one token instead
  (what `idgen train svfr --identity-backend insightface` trains on).
"""

from __future__ import annotations

from typing import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from idgen.errors import IdgenError

from idgen.adapters.svfr.config import IDENTITY_CHANNELS, SVFR_IN_CHANNELS, TASK_ORDER


def task_vector(tasks: Sequence[str]) -> torch.Tensor:
    """The multi-hot task code `[3]` (float32) for any non-empty combination of `TASK_ORDER`."""
    unknown = [t for t in tasks if t not in TASK_ORDER]
    if unknown or not tasks:
        raise IdgenError(f"tasks must be a non-empty combination of {TASK_ORDER}, got {list(tasks)}.")
    return torch.tensor([float(t in tasks) for t in TASK_ORDER])


def widen_conv_in(unet, in_channels: int = SVFR_IN_CHANNELS):
    """Give `unet` (in place, returned) a `conv_in` with `in_channels` inputs: the old weights for
    the first channels, zeros for the new ones; the config follows, so `save_pretrained` /
    `from_pretrained` round-trip the widened model."""
    old = unet.conv_in
    extra = in_channels - old.in_channels
    if extra < 0:
        raise IdgenError(f"the UNet already reads {old.in_channels} channels; cannot narrow it to {in_channels}.")
    if extra == 0:
        return unet
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=old.bias is not None)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        if old.bias is not None:
            new.bias.copy_(old.bias)
    unet.conv_in = new.to(device=old.weight.device, dtype=old.weight.dtype)
    unet.register_to_config(in_channels=in_channels)
    return unet


def check_task_conditioning(unet) -> None:
    """The UNet must embed exactly 3 added time ids (SVD's layout), which carry the task code."""
    config = unet.config
    if config.projection_class_embeddings_input_dim != len(TASK_ORDER) * config.addition_time_embed_dim:
        raise IdgenError(
            f"this UNet embeds {config.projection_class_embeddings_input_dim // config.addition_time_embed_dim} added "
            f"time ids; SVFR's task code needs SVD's 3.")


class IDProjection(ModelMixin, ConfigMixin):
    """ArcFace features -> identity tokens (official `IDProjConvModel`).

    Args:
        in_channels: ArcFace feature channels (512).
        out_channels: the UNet's cross-attention width (1024 for SVD).
    """

    @register_to_config
    def __init__(self, in_channels: int = IDENTITY_CHANNELS, out_channels: int = 1024):
        super().__init__()
        self.project1024 = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.final_norm = nn.LayerNorm(out_channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Tokens `[B, h*w, out_channels]` from features `[B, C, h, w]` (the official 7x7 map of the
        IR backbone) or an embedding `[B, C]` (one token)."""
        if features.ndim == 2:
            features = features[:, :, None, None]
        if features.ndim != 4 or features.shape[1] != self.config.in_channels:
            raise IdgenError(f"identity features must be [B, {self.config.in_channels}] or "
                             f"[B, {self.config.in_channels}, h, w]; got {tuple(features.shape)}.")
        x = self.project1024(features.to(self.dtype)).flatten(2).transpose(1, 2)
        return self.final_norm(x)
