"""Decoupled identity cross-attention (InstantID / IP-Adapter): `text attention + scale x identity
attention`, computed with SDPA.

Why not diffusers' `IPAdapterAttnProcessor2_0` (same math for one unmasked image): it owns its
`to_k_ip`/`to_v_ip` inside the UNet (not restorable by `save_pretrained`/`from_pretrained`, not a
separate offloadable component), projects the constant identity tokens again at every step, and
downsamples region masks bicubically at every step, which leaks the identity outside its mask.
Here the weights live in the `InstantIDAdapter` component, the identity keys/values are computed
once per call (`IdentityAttentionInputs`), masks are downsampled with nearest (as the official
`region_control`) once per resolution, and the processor itself holds only its index and a scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from idgen.adapters.attention import AttentionState, attention_epilogue, attention_prologue


@dataclass
class IdentityAttentionInputs:
    """Per-call identity inputs shared by every identity processor of one UNet.

    Passed to the UNet as `cross_attention_kwargs={"ip_hidden_states": inputs}` (a name diffusers
    forwards silently to processors that do not take it, e.g. the self-attention ones).

    Attributes:
        kv: `{layer_index: [(key, value) per identity]}`, each `[batch, tokens, inner_dim]`, from
            `InstantIDAdapter.identity_kv` (computed once per call, not per step).
        scales: `{layer_index: [scale per identity]}` as Python floats (no device sync in the loop).
        masks: one entry per identity: `None` (everywhere) or a `[1, 1, H, W]` float tensor in
            output-pixel (or latent) space, 1 where the identity applies.
        latent_size: `(height, width)` of the UNet input latents; used to find the spatial size of
            each attention resolution for the masks.
    """

    kv: dict[int, list[tuple[torch.Tensor, torch.Tensor]]]
    scales: dict[int, list[float]]
    masks: Sequence[Optional[torch.Tensor]] = ()
    latent_size: Optional[tuple[int, int]] = None
    _mask_cache: dict = field(default_factory=dict, repr=False)

    def mask(self, identity: int, num_queries: int, device, dtype) -> Optional[torch.Tensor]:
        """The mask of `identity` at the resolution with `num_queries` positions, `[1, L, 1]`."""
        if identity >= len(self.masks) or self.masks[identity] is None:
            return None
        key = (identity, num_queries, device, dtype)
        cached = self._mask_cache.get(key)
        if cached is None:
            h, w = _spatial_size(num_queries, self.latent_size, self.masks[identity].shape[-2:])
            m = F.interpolate(self.masks[identity].to(device=device, dtype=torch.float32), size=(h, w), mode="nearest")
            cached = m.reshape(1, h * w, 1).to(dtype)
            self._mask_cache[key] = cached
        return cached


def _spatial_size(num_queries: int, latent_size, mask_size) -> tuple[int, int]:
    """`(h, w)` with `h * w == num_queries` for a UNet level: the latent size halved (ceil, as
    the stride-2 downsamplers do) until it matches; falls back to the mask's aspect ratio."""
    if latent_size is not None:
        h, w = int(latent_size[0]), int(latent_size[1])
        while h * w > num_queries:
            h, w = -(-h // 2), -(-w // 2)
        if h * w == num_queries:
            return h, w
    mh, mw = int(mask_size[0]), int(mask_size[1])
    ratio = math.sqrt(mh * mw / num_queries)
    h, w = max(1, round(mh / ratio)), max(1, round(mw / ratio))
    if h * w != num_queries:
        raise ValueError(
            f"cannot map an identity mask of size {mh}x{mw} onto an attention map with {num_queries} "
            "positions; give masks with the aspect ratio of the output image."
        )
    return h, w


class InstantIDAttnProcessor:
    """Cross-attention processor with a decoupled identity branch.

    Holds only its layer index in the official checkpoint numbering (`index`, the k of
    `ip_adapter.{k}.to_k_ip.weight`) and a default `scale`; the identity keys/values and per-call
    scales come in through `ip_hidden_states` (`IdentityAttentionInputs`). Without them it is
    exactly diffusers' `AttnProcessor2_0` (its prologue and epilogue: `idgen.adapters.attention`).

    Image IP-Adapters (the style reference, `idgen.adapters.style`): `ip_processor` is the diffusers
    `IPAdapterAttnProcessor2_0` this processor replaces for a call; when the UNet hands over
    `encoder_hidden_states = (text, [image tokens per adapter])` (its `encoder_hid_proj` is set),
    each adapter's attention over its tokens, with that processor's `to_k_ip`/`to_v_ip` and `scale`,
    is added after the identity's (diffusers' math; scale 0 skipped).
    """

    def __init__(self, index: int, scale: float = 1.0, ip_processor=None):
        if not hasattr(F, "scaled_dot_product_attention"):
            raise ImportError("InstantIDAttnProcessor needs torch >= 2.0 (scaled_dot_product_attention).")
        self.index = int(index)
        self.scale = scale
        self.ip_processor = ip_processor

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        temb: Optional[torch.Tensor] = None,
        ip_hidden_states: Optional[IdentityAttentionInputs] = None,
    ) -> torch.Tensor:
        image_tokens = None
        if isinstance(encoder_hidden_states, tuple):  # (text, [tokens per image IP-Adapter])
            encoder_hidden_states, image_tokens = encoder_hidden_states
        state = attention_prologue(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        hidden_states = F.scaled_dot_product_attention(
            state.query, state.key, state.value, attn_mask=state.attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = state.merge_heads(hidden_states)
        if ip_hidden_states is not None:
            hidden_states = self._add_identity(ip_hidden_states, hidden_states, state)
        if image_tokens is not None:
            hidden_states = self._add_image_adapters(image_tokens, hidden_states, state)
        return attention_epilogue(attn, state, hidden_states)

    @torch.compiler.disable
    def _add_image_adapters(self, image_tokens: Sequence[torch.Tensor], hidden_states: torch.Tensor,
                            state: AttentionState) -> torch.Tensor:
        """`hidden_states` plus `scale x attention` over each image adapter's tokens `[B, (n,) T, D]`."""
        proc = self.ip_processor
        if proc is None or len(proc.scale) != len(image_tokens):
            raise ValueError(
                f"the UNet passed {len(image_tokens)} image IP-Adapter token sets to identity layer {self.index}, "
                f"which has {0 if proc is None else len(proc.scale)} image adapters."
            )
        for tokens, scale, to_k, to_v in zip(image_tokens, proc.scale, proc.to_k_ip, proc.to_v_ip):
            if isinstance(scale, (list, tuple)):
                raise ValueError("per-image scales (masked image IP-Adapters) are not supported next to InstantID.")
            if scale == 0:  # skipped, so scale 0 is exactly the identity-only result
                continue
            batch = tokens.shape[0]
            ip_key = state.split_heads(to_k(tokens).reshape(batch, -1, to_k.out_features))
            ip_value = state.split_heads(to_v(tokens).reshape(batch, -1, to_v.out_features))
            ip_out = F.scaled_dot_product_attention(state.query, ip_key, ip_value, attn_mask=None, dropout_p=0.0,
                                                    is_causal=False)
            hidden_states = hidden_states + scale * state.merge_heads(ip_out)
        return hidden_states

    # Run eagerly under `torch.compile`: the lookup by this layer's `index` would make dynamo
    # specialise every compiled transformer block on its layer (one recompile per layer, over the
    # recompile limit); outside the compiled graph all blocks of one shape share one graph.
    @torch.compiler.disable
    def _add_identity(self, inputs: IdentityAttentionInputs, hidden_states: torch.Tensor,
                      state: AttentionState) -> torch.Tensor:
        """`hidden_states` `[B, L, inner_dim]` plus each identity's scaled (and masked) attention
        over its keys/values."""
        layer_kv = inputs.kv.get(self.index)
        if layer_kv is None:
            return hidden_states
        scales = inputs.scales.get(self.index, [self.scale] * len(layer_kv))
        num_queries = hidden_states.shape[1]
        for i, ((ip_key, ip_value), scale) in enumerate(zip(layer_kv, scales)):
            if scale == 0:  # skipped, so scale 0 is exactly the plain UNet
                continue
            ip_out = F.scaled_dot_product_attention(state.query, state.split_heads(ip_key), state.split_heads(ip_value),
                                                    attn_mask=None, dropout_p=0.0, is_causal=False)
            ip_out = state.merge_heads(ip_out)
            mask = inputs.mask(i, num_queries, ip_out.device, ip_out.dtype)
            if mask is not None:
                ip_out = ip_out * mask
            hidden_states = hidden_states + scale * ip_out
        return hidden_states
