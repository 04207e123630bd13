"""PVA's identity encoder: 1–20 reference ArcFace embeddings -> identity tokens of the text width.

The official PVA code (`TransformNetwork(mode="trans")`) is `Linear(512 -> d)` followed by a
`torch.nn.TransformerEncoder` (8 heads, post-norm, ReLU, feed-forward 2048, a final LayerNorm) over
the references: one token per reference. The paper's released configuration asks for a fixed
number of tokens instead (10 of the text width), which we get with learned queries prepended to
the projected references (as in Perceiver/Q-Former); their outputs are the tokens.
`num_tokens=0` is exactly the official module (the same state dict under
`idgen.adapters.pva.loader.official_key_map`), so official checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from idgen.errors import IdgenError

MAX_REFERENCES = 20


class PVAIdentityEncoder(nn.Module):
    """Reference embeddings `[B, N, embedding_dim]` -> identity tokens `[B, T, width]`.

    Args:
        embedding_dim: width of the face embeddings (512 for ArcFace).
        width: token width = the UNet's cross-attention width (768 SD1.5, 1024 SD2, 2048 SDXL).
        num_tokens: T learned queries (10 in the paper); 0 = one token per reference (official
            `TransformNetwork`).
        num_layers, num_heads, feedforward_dim, dropout: the transformer (official: 8 heads,
            feed-forward 2048, dropout 0.1; the layer count is the run's `num_layer`).
    """

    def __init__(self, embedding_dim: int = 512, width: int = 768, num_tokens: int = 10, num_layers: int = 4,
                 num_heads: int = 8, feedforward_dim: int = 2048, dropout: float = 0.1):
        super().__init__()
        if width % num_heads:
            raise IdgenError(f"PVA encoder width {width} is not divisible by num_heads {num_heads}.")
        self.embedding_dim = int(embedding_dim)
        self.proj = nn.Linear(embedding_dim, width)
        layer = nn.TransformerEncoderLayer(width, num_heads, dim_feedforward=feedforward_dim, dropout=dropout,
                                           batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)
        self.queries = nn.Parameter(torch.randn(1, num_tokens, width) * width**-0.5) if num_tokens > 0 else None

    @property
    def num_tokens(self) -> int:
        return 0 if self.queries is None else int(self.queries.shape[1])

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """Tokens `[B, T, width]` (T = `num_tokens`, or N when `num_tokens` is 0)."""
        if embeds.ndim == 2:
            embeds = embeds[:, None]
        if embeds.ndim != 3 or embeds.shape[-1] != self.embedding_dim:
            raise IdgenError(
                f"PVA identity encoder takes embeddings [B, N, {self.embedding_dim}], got {tuple(embeds.shape)}."
            )
        if not 1 <= embeds.shape[1] <= MAX_REFERENCES:
            raise IdgenError(f"PVA takes 1 to {MAX_REFERENCES} reference embeddings, got {embeds.shape[1]}.")
        x = self.proj(embeds.to(self.proj.weight.dtype))
        if self.queries is None:
            return self.transformer(x)
        queries = self.queries.to(x.dtype).expand(x.shape[0], -1, -1)
        return self.transformer(torch.cat([queries, x], dim=1))[:, : self.num_tokens]

