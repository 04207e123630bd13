"""PuLID's ID encoders: the ArcFace + EVA-CLIP condition -> ID tokens for the UNet.

- `IDEncoder` (v1, official `pulid/encoders.py`): an MLP turns the `[arcface, eva_embedding]`
  condition into `num_token` tokens; per EVA hidden state an MLP of its CLS token plus the mean
  of an MLP of its patch tokens gives one more token (5 + 5 tokens).
- `IDFormer` (v1.1, official `pulid/encoders_transformer.py`): a perceiver: learned queries and
  the ArcFace-condition tokens attend (as latents) to the condition tokens plus each EVA hidden
  state in turn; the first `num_queries` latents, projected, are the ID tokens.

The official modules hard-code the EVA width (1024) and the mapping width (1024); here they are
`vit_width` / `mapping_dim` (official defaults in `idgen.adapters.pulid.config`) so tests can be tiny.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from idgen.adapters.perceiver import PerceiverAttention, feed_forward


def _mlp(dims: Sequence[int]) -> nn.Sequential:
    """Linear -> LayerNorm -> LeakyReLU between consecutive `dims`, a plain Linear at the end
    (the official `nn.Sequential` layouts, so the keys are `0.weight`, `1.weight`, `3.weight`...)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers += [nn.LayerNorm(b), nn.LeakyReLU()]
    return nn.Sequential(*layers)


class IDEncoder(nn.Module):
    """v1: `(condition [B, id_dim], hidden_states 5 x [B, 1 + N, vit_width])` -> `[B, num_token + 5, context_dim]`.

    `body` hidden sizes are the official `min(context_dim * num_token // 4, 1024)` and `// 2`.
    """

    def __init__(self, id_dim: int = 1280, vit_width: int = 1024, mapping_dim: int = 1024, context_dim: int = 2048,
                 num_token: int = 5, num_layers: int = 5):
        super().__init__()
        self.num_token = num_token
        self.context_dim = context_dim
        self.num_layers = num_layers
        h1 = min((context_dim * num_token) // 4, 1024)
        h2 = min((context_dim * num_token) // 2, 1024)
        self.body = _mlp([id_dim, h1, h2, context_dim * num_token])
        for i in range(num_layers):
            setattr(self, f"mapping_{i}", _mlp([vit_width, mapping_dim, mapping_dim, context_dim]))
            setattr(self, f"mapping_patch_{i}", _mlp([vit_width, mapping_dim, mapping_dim, context_dim]))

    def forward(self, x: torch.Tensor, y: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.body(x).reshape(-1, self.num_token, self.context_dim)
        tokens = [
            getattr(self, f"mapping_{i}")(h[:, :1]) + getattr(self, f"mapping_patch_{i}")(h[:, 1:]).mean(dim=1, keepdim=True)
            for i, h in enumerate(y)
        ]
        return torch.cat([x, *tokens], dim=1)


class IDFormer(nn.Module):
    """v1.1: `(condition [B, id_dim] or [B, R, id_dim], hidden_states 5 x [B, 1 + N, vit_width])`
    -> `[B, num_queries, output_dim]`. With R reference photos (`[B, R, id_dim]`, hidden states
    concatenated along the tokens) the condition gives `R * num_id_token` tokens."""

    def __init__(self, id_dim: int = 1280, vit_width: int = 1024, mapping_dim: int = 1024, dim: int = 1024,
                 depth: int = 10, dim_head: int = 64, heads: int = 16, num_id_token: int = 5, num_queries: int = 32,
                 output_dim: int = 2048, ff_mult: int = 4, num_layers: int = 5):
        super().__init__()
        if depth % num_layers:
            raise ValueError(f"IDFormer depth {depth} must be a multiple of {num_layers}.")
        self.num_id_token = num_id_token
        self.dim = dim
        self.num_queries = num_queries
        self.num_layers = num_layers
        self.depth = depth // num_layers
        scale = dim ** -0.5
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) * scale)
        self.proj_out = nn.Parameter(scale * torch.randn(dim, output_dim))
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim=dim, dim_head=dim_head, heads=heads), feed_forward(dim, ff_mult)])
            for _ in range(depth)
        )
        for i in range(num_layers):
            setattr(self, f"mapping_{i}", _mlp([vit_width, mapping_dim, mapping_dim, dim]))
        self.id_embedding_mapping = _mlp([id_dim, mapping_dim, mapping_dim, dim * num_id_token])

    def forward(self, x: torch.Tensor, y: Sequence[torch.Tensor]) -> torch.Tensor:
        latents = self.latents.repeat(x.size(0), 1, 1)
        references = x.shape[1] if x.ndim == 3 else 1
        x = self.id_embedding_mapping(x).reshape(-1, self.num_id_token * references, self.dim)
        latents = torch.cat((latents, x), dim=1)
        for i in range(self.num_layers):
            context = torch.cat((x, getattr(self, f"mapping_{i}")(y[i])), dim=1)
            for attn, ff in self.layers[i * self.depth: (i + 1) * self.depth]:
                latents = attn(context, latents) + latents
                latents = ff(latents) + latents
        return latents[:, : self.num_queries] @ self.proj_out
