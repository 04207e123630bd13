"""`PuLIDAdapter`: every weight of `pulid_v1.bin` / `pulid_v1.1.safetensors` in one pipeline component.

Its state dict is the official file unchanged: `id_adapter.*` (the `IDEncoder` of v1 or the
`IDFormer` of v1.1) and `id_adapter_attn_layers.{k}.id_to_{k,v}.weight`, where k indexes the UNet's
attention processors in diffusers' order (`attn_processor_order`; the official code makes a
`ModuleList` of all of them, so only the odd k, the cross-attentions, hold weights).
"""

from __future__ import annotations

from typing import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from idgen.adapters.instantid.model import identity_layers, is_cross_attention
from idgen.adapters.pulid.config import ID_ENCODER_V1, ID_FORMER_V11, check_version
from idgen.adapters.pulid.encoder import IDEncoder, IDFormer
from idgen.errors import IdgenError


class IDAttention(nn.Module):
    """The ID key/value projections of one cross-attention (official `IDAttnProcessor` weights)."""

    def __init__(self, cross_attention_dim: int, hidden_size: int):
        super().__init__()
        self.id_to_k = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.id_to_v = nn.Linear(cross_attention_dim, hidden_size, bias=False)


class PuLIDAdapter(ModelMixin, ConfigMixin):
    """ID encoder (`id_adapter`) + ID key/value projections (`id_adapter_attn_layers`).

    Args:
        version: "v1" (`IDEncoder`) or "v1.1" (`IDFormer`).
        processor_names: the UNet's attention processors in official order; hidden_sizes: the
            width of each cross-attention in that order; cross_attention_dim: the ID token width.
        encoder: the encoder's keyword arguments (`ID_ENCODER_V1` / `ID_FORMER_V11` by default).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, version: str = "v1", processor_names: Sequence[str] = (), hidden_sizes: Sequence[int] = (),
                 cross_attention_dim: int = 2048, encoder: dict = None):
        super().__init__()
        check_version(version)
        encoder = dict(encoder or (ID_ENCODER_V1 if version == "v1" else ID_FORMER_V11))
        width = encoder["context_dim" if version == "v1" else "output_dim"]
        if width != cross_attention_dim:
            raise IdgenError(f"PuLID {version} encoder makes {width}-wide tokens; the UNet needs {cross_attention_dim}.")
        cross = [k for k, name in enumerate(processor_names) if is_cross_attention(name)]
        if len(cross) != len(hidden_sizes):
            raise IdgenError(f"PuLIDAdapter: {len(cross)} cross-attention processors but {len(hidden_sizes)} hidden sizes.")
        self.id_adapter = IDEncoder(**encoder) if version == "v1" else IDFormer(**encoder)
        self.id_adapter_attn_layers = nn.ModuleDict(
            {str(k): IDAttention(cross_attention_dim, int(h)) for k, h in zip(cross, hidden_sizes)}
        )

    @classmethod
    def for_unet(cls, unet, version: str = "v1", encoder: dict = None) -> "PuLIDAdapter":
        """An adapter shaped for `unet` (wrap in `torch.device("meta")` to build without allocating)."""
        names, hidden_sizes = identity_layers(unet)
        return cls(version=version, processor_names=list(names), hidden_sizes=hidden_sizes,
                   cross_attention_dim=int(unet.config.cross_attention_dim), encoder=encoder)

    @property
    def version(self) -> str:
        return self.config.version

    @property
    def layer_names(self) -> dict[int, str]:
        """`{k: processor name}` of the ID (cross-attention) layers."""
        names = self.config.processor_names
        return {int(k): names[int(k)] for k in self.id_adapter_attn_layers.keys()}

    def forward(self, condition: torch.Tensor, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        """ID tokens `[B, T, cross_attention_dim]` from the condition `[B, 512 + eva_dim]` (v1.1 also
        `[B, R, 512 + eva_dim]`) and the EVA hidden states (5 x `[B, 1 + N, vit_width]`)."""
        dtype = self.dtype
        return self.id_adapter(condition.to(self.device, dtype), [h.to(self.device, dtype) for h in hidden_states])

    def identity_kv(self, tokens: torch.Tensor, num_zero: int = 0) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """`{k: (key, value)}` `[B, T + num_zero, hidden]` of every ID layer (the official `NUM_ZERO`
        zero tokens appended before the projections)."""
        if num_zero:
            tokens = torch.cat([tokens, tokens.new_zeros(tokens.shape[0], num_zero, tokens.shape[-1])], dim=1)
        return {int(k): (layer.id_to_k(tokens), layer.id_to_v(tokens)) for k, layer in self.id_adapter_attn_layers.items()}
