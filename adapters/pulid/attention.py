"""PuLID's ID attention: in every UNet cross-attention, `text attention + scale x ID attention`,
optionally orthogonalised against the text attention (official `IDAttnProcessor2_0`).

The processor is weightless: the ID keys/values (`id_to_k` / `id_to_v` of the `PuLIDAdapter`
applied to the ID tokens, with `num_zero` zero tokens appended, whose keys and values are zero
since the projections have no bias) are computed once per call and come in through
`cross_attention_kwargs["ip_hidden_states"]` (`PuLIDAttentionInputs`). Without them, or with scale
0, the processor is exactly diffusers' `AttnProcessor2_0`.

Modes (`ortho`), with `h` the text attention output and `i` the ID attention output, `[B, L, C]`,
sums over the L positions of each sample and channel, in float32:
- "off": `h + s * i`;
- "v1" ("extremely style" in v1): `h + s * (i - p)` with `p = <h, i> / <h, h> * h`;
- "v2" ("fidelity"): `h + s * (i + (a - 1) * p)` where `a` `[B, L, 1]` is the attention weight
  (softmax of the unscaled `q k^T`, averaged over heads) of the first 5 ID tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from idgen.adapters.attention import AttentionState, attention_epilogue, attention_prologue
from idgen.adapters.pulid.config import ORTHO_V2_TOKENS, Ortho


@dataclass
class PuLIDAttentionInputs:
    """Per-call ID inputs shared by every PuLID processor of one UNet.

    Attributes:
        kv: `{layer_index: (key, value)}`, each `[batch, tokens + num_zero, inner_dim]` in the UNet
            batch order (`[negative x n, positive x n]` with classifier-free guidance).
        scale: the ID scale (official `id_scale`); ortho: "off", "v1" or "v2".
    """

    kv: dict[int, tuple[torch.Tensor, torch.Tensor]]
    scale: float
    ortho: Ortho


def add_id_attention(hidden_states: torch.Tensor, query: torch.Tensor, id_key: torch.Tensor,
                     id_value: torch.Tensor, scale: float, ortho: Ortho) -> torch.Tensor:
    """The official ID branch. `hidden_states` `[B, L, C]` (text attention, heads merged), `query`
    `[B, heads, L, d]`, `id_key` / `id_value` `[B, heads, T, d]` -> `[B, L, C]`."""
    b, heads, _, d = query.shape
    id_out = F.scaled_dot_product_attention(query, id_key, id_value, attn_mask=None, dropout_p=0.0, is_causal=False)
    id_out = id_out.transpose(1, 2).reshape(b, -1, heads * d).to(query.dtype)
    if ortho == "off":
        return hidden_states + scale * id_out
    dtype = hidden_states.dtype
    h, i = hidden_states.float(), id_out.float()
    # where the text attention is all zero (an empty negative prompt under SDXL's
    # force_zeros_for_empty_prompt) the official 0/0 gives NaN images; its projection onto zero is 0
    energy = (h * h).sum(dim=-2, keepdim=True)
    projection = torch.where(energy > 0, (h * i).sum(dim=-2, keepdim=True) / energy.clamp_min(1e-30), 0.0) * h
    if ortho == "v1":
        return (h + scale * (i - projection)).to(dtype)
    weight = (query @ id_key.transpose(-2, -1)).softmax(dim=-1).mean(dim=1)
    weight = weight[:, :, :ORTHO_V2_TOKENS].sum(dim=-1, keepdim=True)
    return (h + scale * (i + (weight - 1) * projection)).to(dtype)


class PuLIDAttnProcessor:
    """Cross-attention processor with PuLID's ID branch; holds only its layer `index` (the `k` of
    `id_adapter_attn_layers.{k}.id_to_k.weight`)."""

    def __init__(self, index: int):
        if not hasattr(F, "scaled_dot_product_attention"):
            raise ImportError("PuLIDAttnProcessor needs torch >= 2.0 (scaled_dot_product_attention).")
        self.index = int(index)

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: Optional[torch.Tensor] = None,
                 attention_mask: Optional[torch.Tensor] = None, temb: Optional[torch.Tensor] = None,
                 ip_hidden_states: Optional[PuLIDAttentionInputs] = None) -> torch.Tensor:
        state = attention_prologue(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        hidden_states = F.scaled_dot_product_attention(
            state.query, state.key, state.value, attn_mask=state.attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = state.merge_heads(hidden_states)
        if ip_hidden_states is not None and ip_hidden_states.scale != 0:
            hidden_states = self._add_identity(ip_hidden_states, hidden_states, state)
        return attention_epilogue(attn, state, hidden_states)

    @torch.compiler.disable  # as InstantIDAttnProcessor: no per-layer recompiles
    def _add_identity(self, inputs: PuLIDAttentionInputs, hidden_states: torch.Tensor,
                      state: AttentionState) -> torch.Tensor:
        kv = inputs.kv.get(self.index)
        if kv is None:
            return hidden_states
        key, value = (state.split_heads(t.to(state.query.dtype)) for t in kv)
        return add_id_attention(hidden_states, state.query, key, value, inputs.scale, inputs.ortho)
