"""The perceiver Resampler that turns one ArcFace embedding into InstantID's identity tokens.

Same module tree and parameter names as the official InstantID / IP-Adapter `Resampler`, so the
`image_proj` part of `ip-adapter.bin` loads with `load_state_dict` unchanged:
`latents`, `proj_in`, `proj_out`, `norm_out`, `layers.{i}.0` (PerceiverAttention: norm1, norm2, to_q,
to_kv, to_out) and `layers.{i}.1` (FeedForward: LayerNorm, Linear, GELU, Linear).

Why not diffusers' `IPAdapterPlusImageProjection`: it computes the same function, but with `to_kv`
split in two and SDPA instead of the official pre-scaled fp32 softmax, so it is not bit-identical
to the official outputs (and needs a key conversion that only handles depth <= 4).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Mapping, Optional

import torch
from torch import nn

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


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    inner = int(dim * mult)
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, inner, bias=False),
        nn.GELU(),
        nn.Linear(inner, dim, bias=False),
    )


class PerceiverAttention(nn.Module):
    """Latents attend to `[inputs, latents]` (keys `norm1`, `norm2`, `to_q`, `to_kv`, `to_out`)."""

    def __init__(self, *, dim: int, dim_head: int = 64, heads: int = 8):
        super().__init__()
        self.dim_head = dim_head
        self.heads = heads
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        latents = self.norm2(latents)
        b, n, _ = latents.shape
        q = self._split_heads(self.to_q(latents))
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)
        k, v = self._split_heads(k), self._split_heads(v)
        # The official order of operations (both sides pre-scaled by dim_head^-1/4, softmax in fp32):
        # stable in fp16 and bit-identical to the released implementation.
        scale = 1.0 / math.sqrt(math.sqrt(self.dim_head))
        weight = (q * scale) @ (k * scale).transpose(-2, -1)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        out = (weight @ v).permute(0, 2, 1, 3).reshape(b, n, -1)
        return self.to_out(out)


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
                [PerceiverAttention(dim=c.dim, dim_head=c.dim_head, heads=c.heads), _feed_forward(c.dim, c.ff_mult)]
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
