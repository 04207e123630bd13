"""EVA02-CLIP vision tower (EVA02-CLIP-L-14-336 as PuLID uses it), written for idgen.

Same module tree and math as the official `eva_clip.eva_vit_model.EVAVisionTransformer` with the
EVA02-CLIP-L-14-336 config: pre-norm blocks (LayerNorm eps 1e-6), attention with separate q/k/v
projections, q and v biases, 2-D rotary position embedding on the patch tokens (not on CLS),
sub-LN (a LayerNorm before each output projection), SwiGLU MLP, absolute position embedding,
final LayerNorm on the CLS token and a linear head. `xattn` (xformers) is plain attention here;
patch dropout, drop path and layer scale are off in this config (inference only).

State-dict keys are those of the official `visual.*` (without the prefix). The RoPE tables
(`rope.freqs_cos` / `freqs_sin`, also under every block's `attn.rope`) are computed, not stored:
the official loader deletes them from checkpoints too (`RoPE=1` in `eva_clip.factory`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

#: Blocks before which PuLID reads the hidden states (official `forward_features`: 0 < idx <= 20, idx % 4 == 0).
HIDDEN_STATE_BLOCKS = (4, 8, 12, 16, 20)
LN_EPS = 1e-6


def rope_tables(head_dim: int, pt_seq_len: int, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(cos, sin)` `[grid * grid, head_dim]` of the official `VisionRotaryEmbeddingFast` (language
    frequencies, theta 10000, positions interpolated from `pt_seq_len` to `grid`): the first half of
    the channels rotates with the row, the second with the column, in interleaved pairs."""
    dim = head_dim // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    t = torch.arange(grid) / grid * pt_seq_len
    freqs = torch.einsum("i,f->if", t, freqs).repeat_interleave(2, dim=-1)  # [grid, dim]
    rows = freqs[:, None, :].expand(grid, grid, dim)
    cols = freqs[None, :, :].expand(grid, grid, dim)
    table = torch.cat([rows, cols], dim=-1).reshape(grid * grid, 2 * dim)
    return table.cos(), table.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Interleaved pairs `(x0, x1)` -> `(-x1, x0)` along the last axis."""
    x = x.unflatten(-1, (-1, 2))
    return torch.stack((-x[..., 1], x[..., 0]), dim=-1).flatten(-2)


class EVAAttention(nn.Module):
    """Multi-head self-attention with sub-LN and RoPE on every token but the first (CLS)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.inner_attn_ln = nn.LayerNorm(width, eps=LN_EPS)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """`x` `[B, 1 + N, W]`; `cos` / `sin` `[N, head_dim]` -> `[B, 1 + N, W]`."""
        b, n, _ = x.shape
        q = F.linear(x, self.q_proj.weight, self.q_bias).reshape(b, n, self.heads, -1).transpose(1, 2)
        k = F.linear(x, self.k_proj.weight).reshape(b, n, self.heads, -1).transpose(1, 2)
        v = F.linear(x, self.v_proj.weight, self.v_bias).reshape(b, n, self.heads, -1).transpose(1, 2)
        q = torch.cat([q[:, :, :1], q[:, :, 1:] * cos + rotate_half(q[:, :, 1:]) * sin], dim=2).type_as(v)
        k = torch.cat([k[:, :, :1], k[:, :, 1:] * cos + rotate_half(k[:, :, 1:]) * sin], dim=2).type_as(v)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, -1)
        return self.proj(self.inner_attn_ln(out))


class SwiGLU(nn.Module):
    """`w3(LN(silu(w1 x) * w2 x))`."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(width, hidden)
        self.w2 = nn.Linear(width, hidden)
        self.ffn_ln = nn.LayerNorm(hidden, eps=LN_EPS)
        self.w3 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))


class EVABlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=LN_EPS)
        self.attn = EVAAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = SwiGLU(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)


class EVACLIPVisionModel(ModelMixin, ConfigMixin):
    """The EVA02-CLIP vision tower.

    Args:
        image_size: input side in pixels (336); patch_size: 14; width: token width (1024);
        depth: blocks (24); heads: attention heads (16); mlp_ratio: SwiGLU hidden / width (2.6667);
        embed_dim: output width of the head (768); pt_hw_seq_len: the grid RoPE was trained on (16).
        image_mean / image_std: the input normalisation (OpenAI CLIP's).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, image_size: int = 336, patch_size: int = 14, width: int = 1024, depth: int = 24,
                 heads: int = 16, mlp_ratio: float = 2.6667, embed_dim: int = 768, pt_hw_seq_len: int = 16,
                 image_mean=(0.48145466, 0.4578275, 0.40821073), image_std=(0.26862954, 0.26130258, 0.27577711)):
        super().__init__()
        grid = image_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, width))
        self.blocks = nn.ModuleList(EVABlock(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=LN_EPS)
        self.head = nn.Linear(width, embed_dim)
        cos, sin = self.rope_buffers(self.config)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    @staticmethod
    def rope_buffers(config) -> tuple[torch.Tensor, torch.Tensor]:
        """The RoPE tables `(cos, sin)` `[N, head_dim]` of a tower `config` (computed on CPU)."""
        with torch.device("cpu"):
            return rope_tables(config["width"] // config["heads"], config["pt_hw_seq_len"],
                               config["image_size"] // config["patch_size"])

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Normalised images `[B, 3, image_size, image_size]` -> `(embedding, hidden_states)`:
        the head's output on the final-normed CLS token `[B, embed_dim]` (not L2-normalised) and
        the token sequences `[B, 1 + N, width]` entering blocks 4, 8, 12, 16 and 20."""
        size = self.image_size
        if tuple(pixel_values.shape[-2:]) != (size, size) or pixel_values.ndim != 4:
            raise ValueError(f"EVA-CLIP expects images [B, 3, {size}, {size}], got {tuple(pixel_values.shape)}.")
        x = self.patch_embed.proj(pixel_values.to(self.dtype)).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        cos, sin = self.rope_cos.to(x.dtype), self.rope_sin.to(x.dtype)
        hidden_states = []
        for idx, block in enumerate(self.blocks):
            if idx in HIDDEN_STATE_BLOCKS:
                hidden_states.append(x)
            x = block(x, cos, sin)
        return self.head(self.norm(x)[:, 0]), hidden_states


def eva_state_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """`{key: shape}` of an `EVACLIPVisionModel` of `config`, computed without allocating."""
    with torch.device("meta"):
        model = EVACLIPVisionModel(**config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def is_rope_table(key: str) -> bool:
    """The official tower's stored RoPE buffers (`rope.freqs_cos`, `blocks.i.attn.rope.freqs_sin`)."""
    return key.endswith(("rope.freqs_cos", "rope.freqs_sin"))

