"""The prologue and epilogue every idgen attention processor shares: those of diffusers'
`AttnProcessor2_0`, so a processor adds only its own branch between them.

`attention_prologue` does, in diffusers' order: `spatial_norm`, 4-D `[B, C, H, W]` -> sequence
`[B, H*W, C]`, attention-mask preparation (`[B, heads, 1 or L, S]` for SDPA), `group_norm`,
`to_q` / `to_k` / `to_v` (with `norm_cross` on the context) and the split into heads, then the
optional `norm_q` / `norm_k`. `attention_epilogue` merges the heads, applies `to_out`, restores
the 4-D shape, adds the residual and divides by `rescale_output_factor`. The two around one
`scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)` are exactly
`AttnProcessor2_0`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class AttentionState:
    """One attention call after the prologue.

    Attributes:
        query: `[B, heads, L, head_dim]`; key / value: `[B, heads, S, head_dim]`.
        hidden_states: `[B, L, query_dim]`, the queries' input (after `spatial_norm` / `group_norm`).
        attention_mask: `[B, heads, 1 or L, S]` additive mask, or None.
        residual: the processor's input as given (`[B, L, C]` or `[B, C, H, W]`).
        spatial_shape: `(B, C, H, W)` when the input was 4-D, else None.
        heads, head_dim: the attention's head count and width.
    """

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    hidden_states: torch.Tensor
    attention_mask: Optional[torch.Tensor]
    residual: torch.Tensor
    spatial_shape: Optional[tuple[int, int, int, int]]
    heads: int
    head_dim: int

    @property
    def batch_size(self) -> int:
        return int(self.hidden_states.shape[0])

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, N, heads * head_dim]` -> `[B, heads, N, head_dim]`."""
        return x.view(self.batch_size, -1, self.heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, heads, N, head_dim]` -> `[B, N, heads * head_dim]`, in the query's dtype."""
        return x.transpose(1, 2).reshape(self.batch_size, -1, self.heads * self.head_dim).to(self.query.dtype)


def attention_prologue(attn, hidden_states: torch.Tensor, encoder_hidden_states: Optional[torch.Tensor] = None,
                       attention_mask: Optional[torch.Tensor] = None,
                       temb: Optional[torch.Tensor] = None) -> AttentionState:
    """diffusers' `AttnProcessor2_0` up to the attention itself (see the module docstring).

    Args:
        attn: the diffusers `Attention` module.
        hidden_states: `[B, L, C]` or `[B, C, H, W]`.
        encoder_hidden_states: the context `[B, S, cross_attention_dim]` (None: self-attention).
        attention_mask: diffusers' mask (`[B, S]`, `[B, 1, S]` or per-head), or None.
        temb: the time embedding for `spatial_norm`.
    """
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    spatial_shape = None
    if hidden_states.ndim == 4:
        spatial_shape = tuple(hidden_states.shape)
        batch_size, channel, height, width = spatial_shape
        hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

    batch_size, sequence_length, _ = (
        hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
    )
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

    query = attn.to_q(hidden_states)
    if encoder_hidden_states is None:
        encoder_hidden_states = hidden_states
    elif attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    key = attn.to_k(encoder_hidden_states)
    value = attn.to_v(encoder_hidden_states)

    state = AttentionState(query=query, key=key, value=value, hidden_states=hidden_states,
                           attention_mask=attention_mask, residual=residual, spatial_shape=spatial_shape,
                           heads=attn.heads, head_dim=key.shape[-1] // attn.heads)
    state.query, state.key, state.value = state.split_heads(query), state.split_heads(key), state.split_heads(value)
    if getattr(attn, "norm_q", None) is not None:
        state.query = attn.norm_q(state.query)
    if getattr(attn, "norm_k", None) is not None:
        state.key = attn.norm_k(state.key)
    return state


def attention_epilogue(attn, state: AttentionState, hidden_states: torch.Tensor) -> torch.Tensor:
    """diffusers' `AttnProcessor2_0` after the attention: `to_out` on the merged-head output
    `hidden_states` `[B, L, heads * head_dim]`, back to `[B, C, H, W]` for a 4-D input, plus the
    residual, divided by `rescale_output_factor`."""
    hidden_states = attn.to_out[0](hidden_states)
    hidden_states = attn.to_out[1](hidden_states)
    if state.spatial_shape is not None:
        hidden_states = hidden_states.transpose(-1, -2).reshape(*state.spatial_shape)
    if attn.residual_connection:
        hidden_states = hidden_states + state.residual
    return hidden_states / attn.rescale_output_factor
