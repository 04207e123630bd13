"""SVFR's layout on Stable Video Diffusion, in one place: the task order of the added time ids,
the UNet's input channels, and `SVFRConfig` (the shapes of the two released weight files)."""

from __future__ import annotations

from dataclasses import dataclass

#: SVFR's task order in the added time ids.
TASK_ORDER = ("bfr", "colorize", "inpaint")
SVD_IN_CHANNELS = 8
SVFR_IN_CHANNELS = 12
#: ArcFace feature channels (the `layer4` map or the embedding) that `id_linear` reads.
IDENTITY_CHANNELS = 512


@dataclass(frozen=True)
class SVFRConfig:
    """The shapes of SVFR's released weights for one SVD UNet.

    Attributes:
        in_channels: UNet input channels (noisy + degraded-clip + reference latents: 12).
        identity_channels: ArcFace feature channels `id_linear` reads (512).
        cross_attention_dim: identity token width = the UNet's cross-attention width (1024 for SVD).
    """

    in_channels: int = SVFR_IN_CHANNELS
    identity_channels: int = IDENTITY_CHANNELS
    cross_attention_dim: int = 1024

    @classmethod
    def for_unet(cls, unet, identity_channels: int = IDENTITY_CHANNELS) -> "SVFRConfig":
        """The layout for an SVD `unet` (its cross-attention width)."""
        return cls(identity_channels=identity_channels, cross_attention_dim=int(unet.config.cross_attention_dim))
