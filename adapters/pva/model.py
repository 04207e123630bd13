"""`PVAAdapter`: every PVA weight in one pipeline component.

- `identity_encoder`: reference ArcFace embeddings -> identity tokens (`PVAIdentityEncoder`).
- `visual[i]`: `to_visual_q/k/v` of the i-th cross-attention listed in `config.layer_names`
  (the `attn2` of every transformer block, official naming), initialised from that layer's text
  projections (`PVAAdapter.for_unet`), as the official `change_forward` does.

As a diffusers `ModelMixin` it moves with `pipe.to()`, takes part in CPU offload and round-trips
through `save_pretrained`; the UNet's `PVAAttnProcessor`s hold no weights.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from idgen.deprecation import take_renamed
from idgen.errors import IdgenError

from idgen.adapters.pva.attention import PVAInputs
from idgen.adapters.pva.config import DEFAULT_IDENTITY_SCALE, OFFICIAL_NUM_HEADS, PVAConfig, check_identity_scale
from idgen.adapters.pva.encoder import PVAIdentityEncoder


def pva_layers(unet) -> list[str]:
    """Module paths of the UNet's cross-attentions that get a visual branch: the `attn2` of every
    transformer block (official `change_forward`), in `unet.attn_processors` order."""
    names = [name[: -len(".processor")] for name in unet.attn_processors if name.endswith("attn2.processor")]
    if not names:
        raise IdgenError("PVA needs a UNet with cross-attention (attn2) layers; this one has none.")
    return names


def match_unet(adapter: "PVAAdapter", unet) -> "PVAAdapter":
    """Move `adapter` to the UNet's device, and to its dtype only when they differ."""
    adapter = adapter.to(unet.device)
    return adapter.to(unet.dtype) if adapter.dtype != unet.dtype else adapter


class VisualProjections(nn.Module):
    """`to_visual_q/k/v` of one cross-attention (official names)."""

    def __init__(self, query_dim: int, cross_attention_dim: int, inner_dim: int, bias: bool = False):
        super().__init__()
        self.to_visual_q = nn.Linear(query_dim, inner_dim, bias=bias)
        self.to_visual_k = nn.Linear(cross_attention_dim, inner_dim, bias=bias)
        self.to_visual_v = nn.Linear(cross_attention_dim, inner_dim, bias=bias)


class PVAAdapter(ModelMixin, ConfigMixin):
    """PVA identity encoder + visual projections.

    Args:
        layer_names: module paths of the UNet cross-attentions (`pva_layers(unet)`).
        query_dims / inner_dims: per layer, the query width and the attention inner width.
        cross_attention_dim, embedding_dim, num_tokens, num_layers, num_heads, feedforward_dim,
            dropout: the identity encoder (`PVAConfig`, flattened so `config.json` holds them).
        bias: whether the projections have biases (as the UNet's `to_q`; False for SD).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, layer_names: Sequence[str] = (), query_dims: Sequence[int] = (), inner_dims: Sequence[int] = (),
                 cross_attention_dim: int = 768, embedding_dim: int = 512, num_tokens: int = 10, num_layers: int = 4,
                 num_heads: int = OFFICIAL_NUM_HEADS, feedforward_dim: int = 2048, dropout: float = 0.1,
                 bias: bool = False):
        super().__init__()
        if not len(layer_names) == len(query_dims) == len(inner_dims):
            raise IdgenError("PVAAdapter: layer_names, query_dims and inner_dims must have the same length.")
        self.identity_encoder = PVAIdentityEncoder(embedding_dim, cross_attention_dim, num_tokens, num_layers,
                                                   num_heads, feedforward_dim, dropout)
        self.visual = nn.ModuleList(
            VisualProjections(int(q), cross_attention_dim, int(i), bias) for q, i in zip(query_dims, inner_dims)
        )

    @classmethod
    def for_unet(cls, unet, *, init_from_text: bool = True, **encoder_config) -> "PVAAdapter":
        """An adapter shaped for `unet`; `encoder_config` overrides `PVAConfig`'s defaults (unknown
        keys are an `IdgenError`). With `init_from_text` the visual projections start as copies of
        the text ones (official initialisation)."""
        names = pva_layers(unet)
        modules = dict(unet.named_modules())
        attns = [modules[n] for n in names]
        config = PVAConfig.from_mapping(encoder_config, cross_attention_dim=int(unet.config.cross_attention_dim))
        adapter = cls(
            layer_names=names,
            query_dims=[a.to_q.in_features for a in attns],
            inner_dims=[a.to_q.out_features for a in attns],
            bias=attns[0].to_q.bias is not None,
            **config.to_dict(),
        )
        if init_from_text:
            with torch.no_grad():
                for proj, attn in zip(adapter.visual, attns):
                    proj.to_visual_q.load_state_dict(attn.to_q.state_dict())
                    proj.to_visual_k.load_state_dict(attn.to_k.state_dict())
                    proj.to_visual_v.load_state_dict(attn.to_v.state_dict())
        return match_unet(adapter, unet)

    @property
    def embedding_dim(self) -> int:
        return int(self.config.embedding_dim)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """Identity tokens `[B, T, cross_attention_dim]` from embeddings `[B, N, embedding_dim]`."""
        return self.identity_encoder(embeds.to(device=self.device, dtype=self.dtype))

    def inputs(self, tokens: torch.Tensor, *, identity_scale: Optional[float] = None,
               negative_half_without_identity: bool = False, dropped: Optional[torch.Tensor] = None,
               **renamed) -> PVAInputs:
        """The per-call `PVAInputs` for identity `tokens` `[1 or B, T, cross_attention_dim]`.

        Args:
            identity_scale: s >= 0 (default 1, the official model; `scale` is its old name).
            negative_half_without_identity: mask the identity out of the batch's first half (CFG).
            dropped: `[B]` bool, rows without identity (training's condition dropout).
        """
        identity_scale = take_renamed(renamed, "scale", "identity_scale", identity_scale)
        if renamed:
            raise IdgenError(f"PVAAdapter.inputs() got unexpected arguments {sorted(renamed)}.")
        identity_scale = check_identity_scale(DEFAULT_IDENTITY_SCALE if identity_scale is None else identity_scale)
        width = self.config.cross_attention_dim
        if tokens.ndim != 3 or tokens.shape[-1] != width:
            raise IdgenError(f"PVA identity tokens must be [B, T, {width}], got {tuple(tokens.shape)}.")
        return PVAInputs(
            visual_q={i: p.to_visual_q for i, p in enumerate(self.visual)},
            kv={i: (p.to_visual_k(tokens), p.to_visual_v(tokens)) for i, p in enumerate(self.visual)},
            identity_scale=identity_scale,
            negative_half_without_identity=negative_half_without_identity,
            dropped=dropped,
        )

    def check_unet(self, unet, what: Optional[str] = None) -> None:
        """Raise a clear error when this adapter was made for another UNet layout."""
        names = pva_layers(unet)
        if list(self.config.layer_names) != names:
            raise IdgenError(
                f"{what or 'this PVA adapter'} was made for another UNet: its cross-attention layers "
                f"{list(self.config.layer_names)[:2]}... do not match the UNet's {names[:2]}..."
            )
