"""Loading SVFR's released weights and starting a training run.

The release has two files: `unet.pth`, the whole widened SVD UNet under diffusers' own key names,
and `id_linear.pth`, the identity projection (`project1024.weight`, `final_norm.weight`,
`final_norm.bias`). `IDProjection` keeps the official names, so `official_key_map` is the identity
on its keys; it is still spelled out so that checks name keys in the file's terms, with
`official_state_dict` its inverse (what idgen writes for the official scripts).

What SVFR does not have: an identity scale (the identity's strength is the pipeline's guidance
ramp, the negative branch gets zero tokens) and an attention processor (the identity tokens are
the context of SVD's own cross-attention, in place of the CLIP image token). Unloading is setting
the pipeline's `id_projection` component to None.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch

from idgen.checkpoint import PathOrStateDict, check_state_dict, first_mismatch, resolve_state_dict

from idgen.adapters.svfr.config import SVFR_IN_CHANNELS, SVFRConfig
from idgen.adapters.svfr.model import IDProjection, check_task_conditioning, widen_conv_in


def official_key_map(projection: IDProjection) -> dict[str, str]:
    """`{id_linear.pth key: IDProjection state-dict key}` (the same names)."""
    return {key: key for key in projection.state_dict()}


def official_state_dict(projection: IDProjection) -> dict[str, torch.Tensor]:
    """The inverse of `convert_official_state_dict`: `projection` under `id_linear.pth`'s keys."""
    own = projection.state_dict()
    return {official: own[ours] for official, ours in official_key_map(projection).items()}


def convert_official_state_dict(state_dict: Mapping[str, object], projection: IDProjection, *,
                                what: str = "SVFR id_linear") -> dict[str, torch.Tensor]:
    """`id_linear.pth`'s dict -> `projection`'s state dict, every key and shape checked.

    Raises:
        CheckpointError: naming the first missing, misshaped or unexpected key.
    """
    mapping = official_key_map(projection)
    target = projection.state_dict()
    check_state_dict(state_dict, {official: tuple(target[ours].shape) for official, ours in mapping.items()}, what=what)
    return {ours: state_dict[official] for official, ours in mapping.items()}


def load_id_projection(source: PathOrStateDict, config: SVFRConfig) -> IDProjection:
    """`IDProjection` `[B, identity_channels, h, w]` -> `[B, h*w, cross_attention_dim]` from
    `id_linear.pth` (path, or the dict it holds), in eval mode."""
    projection = IDProjection(config.identity_channels, config.cross_attention_dim)
    what = "SVFR id_linear" if isinstance(source, Mapping) else f"SVFR id_linear {str(source)!r}"
    projection.load_state_dict(convert_official_state_dict(resolve_state_dict(source), projection, what=what))
    return projection.eval()


def load_svfr_unet(unet, source: PathOrStateDict):
    """SVD's `unet` (in place, returned) widened to SVFR's input and loaded from `unet.pth`
    (path, or the dict it holds), every key and shape checked."""
    check_task_conditioning(widen_conv_in(unet, SVFR_IN_CHANNELS))
    state_dict = resolve_state_dict(source)
    first_mismatch(unet, state_dict, what="SVFR UNet" if isinstance(source, Mapping) else f"SVFR UNet {str(source)!r}")
    unet.load_state_dict(state_dict)
    return unet


def init_svfr(unet, config: Optional[SVFRConfig] = None) -> IDProjection:
    """The starting point of training: `unet` widened in place (new input channels at zero, so it
    still equals SVD) and a fresh `IDProjection` for it."""
    config = config or SVFRConfig.for_unet(unet)
    check_task_conditioning(widen_conv_in(unet, config.in_channels))
    return IDProjection(config.identity_channels, config.cross_attention_dim)
