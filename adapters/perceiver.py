"""The perceiver blocks that IP-Adapter-style resamplers share: InstantID's `Resampler` and PuLID
v1.1's `IDFormer` both stack `PerceiverAttention` + `feed_forward` with the official module trees
(`norm1`, `norm2`, `to_q`, `to_kv`, `to_out`; `0` LayerNorm, `1` Linear, `2` GELU, `3` Linear), so
their checkpoints load with `load_state_dict` unchanged.

Why not diffusers' `IPAdapterPlusImageProjection` blocks: the same function, but with `to_kv`
split in two and SDPA instead of the official pre-scaled fp32 softmax, so not bit-identical to the
official outputs.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    """LayerNorm -> Linear(dim, dim * mult) -> GELU -> Linear(dim * mult, dim), no biases (official `FeedForward`)."""
    inner = int(dim * mult)
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, inner, bias=False),
        nn.GELU(),
        nn.Linear(inner, dim, bias=False),
    )


class PerceiverAttention(nn.Module):
    """Latents `[B, n, dim]` attend to `[inputs, latents]` (inputs `[B, N, dim]`); returns `[B, n, dim]`."""

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
        # stable in fp16 and bit-identical to the released implementations.
        scale = 1.0 / math.sqrt(math.sqrt(self.dim_head))
        weight = (q * scale) @ (k * scale).transpose(-2, -1)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        out = (weight @ v).permute(0, 2, 1, 3).reshape(b, n, -1)
        return self.to_out(out)
