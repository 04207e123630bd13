"""`InstantIDAdapter`: every weight of InstantID's `ip-adapter.bin` in one pipeline component.

Its state dict is the official file flattened: `image_proj.*` (the Resampler) and
`ip_adapter.{k}.to_{k,v}_ip.weight` (k = index of the UNet attention processor in
`attn_processor_order(unet)`; odd k are the cross-attentions). As a diffusers `ModelMixin` it moves
with `pipe.to()`, takes part in model CPU offload and round-trips through `save_pretrained`; the
UNet's identity processors are weightless and get their keys/values from it once per call.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from idgen.errors import IdgenError

from idgen.adapters.instantid.resampler import Resampler, ResamplerConfig


def attn_processor_order(unet) -> list[str]:
    """Names of the UNet's attention processors in the order official IP-Adapter/InstantID
    checkpoints number them (the order of diffusers' `unet.attn_processors`, spelled out here
    rather than relied on): all `down_blocks` in order, then all `up_blocks`, then `mid_block`;
    inside a block `attentions[a].transformer_blocks[t]`, and per transformer block `attn1`
    (self-attention, even k) before `attn2` (cross-attention, odd k).

    Raises:
        IdgenError: the UNet has attention layers outside this layout (not an SD1.5/SDXL UNet).
    """
    names: list[str] = []

    def visit(prefix: str, block) -> None:
        for a, attention in enumerate(getattr(block, "attentions", None) or []):
            for t, tblock in enumerate(getattr(attention, "transformer_blocks", [])):
                for attn_name in ("attn1", "attn2"):
                    if getattr(tblock, attn_name, None) is not None:
                        names.append(f"{prefix}.attentions.{a}.transformer_blocks.{t}.{attn_name}.processor")

    for b, block in enumerate(unet.down_blocks):
        visit(f"down_blocks.{b}", block)
    for b, block in enumerate(unet.up_blocks):
        visit(f"up_blocks.{b}", block)
    if getattr(unet, "mid_block", None) is not None:
        visit("mid_block", unet.mid_block)

    actual = set(unet.attn_processors)
    if set(names) != actual or len(names) != len(actual):
        extra = sorted(actual - set(names))
        raise IdgenError(
            "InstantID needs a Stable Diffusion UNet whose attention layers all sit in "
            f"transformer blocks; this one also has {extra[:3]}."
        )
    return names


def is_cross_attention(name: str) -> bool:
    """The official rule: every processor that is not a self-attention (`attn1`) gets the identity."""
    return not name.endswith("attn1.processor")


def identity_layers(unet) -> tuple[list[str], list[int]]:
    """`(processor_names, hidden_sizes)`: the full official order and, for each cross-attention in
    that order, its hidden size (the output width of `to_k_ip`/`to_v_ip`)."""
    names = attn_processor_order(unet)
    modules = dict(unet.named_modules())
    hidden_sizes = []
    for name in names:
        if is_cross_attention(name):
            attn = modules[name[: -len(".processor")]]
            hidden_sizes.append(int(attn.to_k.out_features))
    return names, hidden_sizes


class IdentityKV(nn.Module):
    """The identity key/value projections of one cross-attention (`to_k_ip`, `to_v_ip`)."""

    def __init__(self, cross_attention_dim: int, hidden_size: int):
        super().__init__()
        self.to_k_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)


class InstantIDAdapter(ModelMixin, ConfigMixin):
    """Resampler (`image_proj`) + identity key/value projections (`ip_adapter`).

    Args:
        processor_names: the UNet's attention processors in official order (`attn_processor_order`);
            the index into this list is the `k` of the checkpoint keys.
        hidden_sizes: hidden size of each cross-attention, in the order of `processor_names`.
        dim, depth, dim_head, heads, num_queries, embedding_dim, output_dim, ff_mult: Resampler
            hyperparameters (`ResamplerConfig`); `output_dim` is the UNet cross-attention width.
    """

    config_name = "config.json"
    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        processor_names: Sequence[str] = (),
        hidden_sizes: Sequence[int] = (),
        dim: int = 1280,
        depth: int = 4,
        dim_head: int = 64,
        heads: int = 20,
        num_queries: int = 16,
        embedding_dim: int = 512,
        output_dim: int = 2048,
        ff_mult: int = 4,
    ):
        super().__init__()
        resampler_config = ResamplerConfig(
            dim=dim, depth=depth, dim_head=dim_head, heads=heads, num_queries=num_queries,
            embedding_dim=embedding_dim, output_dim=output_dim, ff_mult=ff_mult,
        )
        cross = [k for k, name in enumerate(processor_names) if is_cross_attention(name)]
        if len(cross) != len(hidden_sizes):
            raise IdgenError(
                f"InstantIDAdapter: {len(cross)} cross-attention processors but {len(hidden_sizes)} hidden sizes."
            )
        self.image_proj = Resampler(resampler_config)
        self.ip_adapter = nn.ModuleDict(
            {str(k): IdentityKV(output_dim, int(h)) for k, h in zip(cross, hidden_sizes)}
        )

    @classmethod
    def for_unet(cls, unet, resampler_config: Optional[ResamplerConfig] = None) -> "InstantIDAdapter":
        """An adapter shaped for `unet` (parameters are created on the current default device;
        wrap in `torch.device("meta")` to build without allocating)."""
        names, hidden_sizes = identity_layers(unet)
        cfg = resampler_config or ResamplerConfig(output_dim=unet.config.cross_attention_dim)
        if cfg.output_dim != unet.config.cross_attention_dim:
            raise IdgenError(
                f"resampler output_dim {cfg.output_dim} does not match the UNet cross_attention_dim "
                f"{unet.config.cross_attention_dim}."
            )
        return cls(processor_names=list(names), hidden_sizes=hidden_sizes, **cfg.to_dict())

    @property
    def layer_names(self) -> dict[int, str]:
        """`{k: processor name}` for the identity (cross-attention) layers."""
        names = self.config.processor_names
        return {int(k): names[int(k)] for k in self.ip_adapter.keys()}

    @property
    def embedding_dim(self) -> int:
        return int(self.config.embedding_dim)

    def forward(self, image_embeds: torch.Tensor, return_kv: bool = False):
        """Identity tokens `[B, num_queries, output_dim]` from face embeddings `[B, N, embedding_dim]`
        (the official call: the N embeddings are the Resampler's input tokens).

        With `return_kv=True` also returns `{k: (key, value)}` of every identity layer, so the
        UNet's processors do not project the constant tokens again at every denoising step.
        """
        tokens = self.image_proj(image_embeds.to(device=self.image_proj.latents.device, dtype=self.dtype))
        if not return_kv:
            return tokens
        return tokens, self.identity_kv(tokens)

    def identity_kv(self, tokens: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        return {int(k): (layer.to_k_ip(tokens), layer.to_v_ip(tokens)) for k, layer in self.ip_adapter.items()}
