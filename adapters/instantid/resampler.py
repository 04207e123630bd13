"""The perceiver Resampler that turns one ArcFace embedding into InstantID's identity tokens.

Same module tree and parameter names as the official InstantID / IP-Adapter `Resampler`, so the
`image_proj` part of `ip-adapter.bin` loads with `load_state_dict` unchanged:
`latents`, `proj_in`, `proj_out`, `norm_out`, `layers.{i}.0` (PerceiverAttention: norm1, norm2, to_q,
to_kv, to_out) and `layers.{i}.1` (FeedForward: LayerNorm, Linear, GELU, Linear).

Why not diffusers' `IPAdapterPlusImageProjection`: see `idgen.adapters.perceiver` (and its key
conversion only handles depth <= 4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Mapping, Optional

import torch
from torch import nn

from idgen.adapters.perceiver import PerceiverAttention, feed_forward
from idgen.errors import IdgenError


@dataclass(frozen=True)
class ResamplerConfig:
    """Hyperparameters of the Resampler. Defaults are the official InstantID ones except
    `output_dim`, which is the UNet's `cross_attention_dim` (2048 for SDXL, 768 for SD1.5)."""

    dim: int = 1280
    depth: int = 4
    dim_head: int = 64
    heads: int = 20
    num_queries: int = 16
    embedding_dim: int = 512
    output_dim: int = 2048
    ff_mult: int = 4

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise IdgenError(f"resampler_config.{f.name} must be a positive integer, got {value!r}.")

    @classmethod
    def from_mapping(cls, config: Optional[Mapping[str, int]], *, output_dim: int) -> "ResamplerConfig":
        """Official defaults, overridden by `config` (unknown keys are an error); `output_dim`
        comes from the UNet unless `config` names it."""
        config = dict(config or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise IdgenError(f"resampler_config has unknown keys {unknown}; known keys: {sorted(known)}.")
        config.setdefault("output_dim", output_dim)
        return cls(**config)

    def to_dict(self) -> dict:
        return asdict(self)


class Resampler(nn.Module):
    """Perceiver resampler: `[B, N, embedding_dim]` -> `[B, num_queries, output_dim]`."""

    def __init__(self, config: ResamplerConfig = ResamplerConfig()):
        super().__init__()
        self.config = config
        c = config
        self.latents = nn.Parameter(torch.randn(1, c.num_queries, c.dim) / c.dim**0.5)
        self.proj_in = nn.Linear(c.embedding_dim, c.dim)
        self.proj_out = nn.Linear(c.dim, c.output_dim)
        self.norm_out = nn.LayerNorm(c.output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [PerceiverAttention(dim=c.dim, dim_head=c.dim_head, heads=c.heads), feed_forward(c.dim, c.ff_mult)]
            )
            for _ in range(c.depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latents = self.latents.repeat(x.size(0), 1, 1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))
