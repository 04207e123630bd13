"""Parallel visual attention (PVA, Xu et al. WACV 2024) as a diffusers attention processor.

In every cross-attention, text tokens are attended with the UNet's own `to_q/to_k/to_v` and the
identity tokens with separate `to_visual_q/k/v`; the text scores `q_t k_t^T` and the visual scores
`q_v k_v^T` (both times 1/sqrt(head_dim)) are concatenated along the key axis and share ONE softmax;
the values are concatenated the same way; `to_out` is shared. This is the official `pva_forward`.

Why a processor (and not the official `forward` monkey-patch): the weights live in the `PVAAdapter`
pipeline component (saved, offloaded and moved with the pipeline), the visual keys/values of the
constant identity tokens are projected once per call, and the joint softmax runs in one fused
`scaled_dot_product_attention` call: with `Q = [q_t | q_v]` (concatenated along the head dim),
`K = [[k_t | 0]; [0 | k_v]]` and `V = [v_t; v_v]`, `Q K^T` is exactly `[q_t k_t^T, q_v k_v^T]`.

`identity_scale` s (not in the paper): adds log(s) to the visual scores, i.e. multiplies the
identity tokens' unnormalised attention weights by s. s = 1 is the official model; s = 0 removes
the visual branch (the plain UNet, exactly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from idgen.adapters.attention import AttentionState, attention_epilogue, attention_prologue


@dataclass
class PVAInputs:
    """Per-call PVA inputs shared by every PVA processor of one UNet.

    Passed as `cross_attention_kwargs={"ip_hidden_states": inputs}` (a name diffusers forwards
    quietly to processors that do not take it).

    Attributes:
        visual_q: `{layer index: to_visual_q Linear}` (applied to the hidden states every step).
        kv: `{layer index: (key, value)}`, each `[1 or B, T, inner_dim]`: the identity tokens through
            `to_visual_k/v`, computed once per call.
        identity_scale: s >= 0 (see the module docstring).
        negative_half_without_identity: with classifier-free guidance the batch is
            `[negative; positive]`; True masks the identity tokens out of the negative half (the
            official default, `extra_feat_neg=False`).
        dropped: optional `[B]` bool, True where a row has no identity (training's condition
            dropout: the same as the official negative, which has no identity tokens).
    """

    visual_q: dict[int, nn.Linear]
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]]
    identity_scale: float = 1.0
    negative_half_without_identity: bool = False
    dropped: Optional[torch.Tensor] = None
    _bias_cache: dict = field(default_factory=dict, repr=False)

    def score_bias(self, batch_size: int, num_tokens: int, device, dtype) -> Optional[torch.Tensor]:
        """Additive bias on the visual scores `[B, 1, 1, T]`: log(identity_scale), and -inf on the
        negative half when it has no identity. None when it would be all zeros."""
        if self.identity_scale == 1.0 and not self.negative_half_without_identity and self.dropped is None:
            return None
        key = (batch_size, num_tokens, device, dtype)
        if key not in self._bias_cache:
            bias = torch.full((batch_size, 1, 1, num_tokens), math.log(self.identity_scale), device=device, dtype=dtype)
            if self.negative_half_without_identity:
                bias[: batch_size // 2] = float("-inf")
            if self.dropped is not None:
                bias[self.dropped.to(device)] = float("-inf")
            self._bias_cache[key] = bias
        return self._bias_cache[key]


def joint_attention(q_text, k_text, v_text, q_visual, k_visual, v_visual, *, scale: float,
                    visual_bias: Optional[torch.Tensor] = None, return_probs: bool = False):
    """The PVA attention, written out (reference math for tests; the processor uses SDPA).

    Shapes: queries `[B, H, L, D]`, keys/values `[B, H, S_text or S_visual, D]`; `visual_bias`
    broadcastable to `[B, H, L, S_visual]`. Returns `[B, H, L, D]` (and the joint probabilities
    `[B, H, L, S_text + S_visual]` with `return_probs`).
    """
    text_scores = q_text @ k_text.transpose(-1, -2) * scale
    visual_scores = q_visual @ k_visual.transpose(-1, -2) * scale
    if visual_bias is not None:
        visual_scores = visual_scores + visual_bias
    probs = torch.cat([text_scores, visual_scores], dim=-1).softmax(dim=-1)
    out = probs @ torch.cat([v_text, v_visual], dim=-2)
    return (out, probs) if return_probs else out


class PVAAttnProcessor:
    """Cross-attention processor with PVA's parallel visual branch.

    Holds only its layer `index` (into `PVAAdapter.config.layer_names`); the visual projections and
    identity keys/values arrive through `ip_hidden_states` (`PVAInputs`). Without them, or at scale
    0, it is exactly diffusers' `AttnProcessor2_0` (its prologue and epilogue:
    `idgen.adapters.attention`).
    """

    def __init__(self, index: int):
        self.index = int(index)

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: Optional[torch.Tensor] = None,
                 attention_mask: Optional[torch.Tensor] = None, temb: Optional[torch.Tensor] = None,
                 ip_hidden_states: Optional[PVAInputs] = None) -> torch.Tensor:
        state = attention_prologue(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        visual = None if ip_hidden_states is None else ip_hidden_states.kv.get(self.index)
        if visual is None or ip_hidden_states.identity_scale == 0:
            out = F.scaled_dot_product_attention(state.query, state.key, state.value, attn_mask=state.attention_mask)
        else:
            out = self._joint(ip_hidden_states, state, visual, attn.scale)
        return attention_epilogue(attn, state, state.merge_heads(out))

    def _joint(self, inputs: PVAInputs, state: AttentionState, visual: tuple[torch.Tensor, torch.Tensor],
               scale: float) -> torch.Tensor:
        """The joint text + visual attention `[B, heads, L, head_dim]` in one SDPA call."""
        query, key, value, attention_mask = state.query, state.key, state.value, state.attention_mask
        batch_size = state.batch_size
        visual_key, visual_value = (state.split_heads(t.expand(batch_size, -1, -1)) for t in visual)
        visual_query = state.split_heads(inputs.visual_q[self.index](state.hidden_states))
        num_visual = visual_key.shape[2]
        # Block layout so one SDPA call computes [q_t k_t^T | q_v k_v^T] (see the module docstring).
        joint_query = torch.cat([query, visual_query], dim=-1)
        joint_key = torch.cat([
            torch.cat([key, torch.zeros_like(key)], dim=-1),
            torch.cat([torch.zeros_like(visual_key), visual_key], dim=-1),
        ], dim=2)
        joint_value = torch.cat([value, visual_value], dim=2)
        bias = inputs.score_bias(batch_size, num_visual, query.device, query.dtype)
        mask = None
        if bias is not None or attention_mask is not None:
            text_part = (attention_mask if attention_mask is not None
                         else torch.zeros(1, 1, 1, key.shape[2], device=query.device, dtype=query.dtype))
            visual_part = bias if bias is not None else torch.zeros(1, 1, 1, num_visual, device=query.device, dtype=query.dtype)
            shape = torch.broadcast_shapes(text_part.shape[:-1], visual_part.shape[:-1])
            mask = torch.cat([text_part.expand(*shape, -1), visual_part.expand(*shape, -1)], dim=-1)
        return F.scaled_dot_product_attention(joint_query, joint_key, joint_value, attn_mask=mask, scale=scale)
