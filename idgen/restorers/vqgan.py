"""The VQGAN parts of CodeFormer (sczhou/CodeFormer `basicsr/archs/vqgan_arch.py`): the encoder,
the codebook and the generator, with the official module and parameter names (`blocks.{i}.*`,
`embedding.weight`) so the official files load unchanged. The code is idgen's own, without basicsr.

Block lists, for `ch_mult` of L levels (level i works at `img_size / 2**i` pixels with
`nf * ch_mult[i]` channels) and `res_blocks` residual blocks a level:

- `Encoder.blocks`: conv_in; per level: `res_blocks` x (ResBlock [+ AttnBlock at an attention
  resolution]), then a Downsample except after the last level; ResBlock, AttnBlock, ResBlock;
  GroupNorm; conv to `emb_dim` channels.
- `Generator.blocks`: conv_in from `emb_dim`; ResBlock, AttnBlock, ResBlock; per level from the
  last: `res_blocks` x (ResBlock [+ AttnBlock]), then an Upsample except after level 0; GroupNorm;
  conv to 3 channels.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

#: Every GroupNorm of the VQGAN has 32 groups, so every width is a multiple of 32.
NORM_GROUPS = 32


def group_norm(channels: int) -> nn.GroupNorm:
    """The VQGAN's normalisation: GroupNorm(32, channels, eps=1e-6), affine."""
    return nn.GroupNorm(num_groups=NORM_GROUPS, num_channels=channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    # written as the official `x * sigmoid(x)` rather than F.silu, to stay bit-close to it
    return x * torch.sigmoid(x)


class ResBlock(nn.Module):
    """norm -> swish -> conv3x3, twice, plus the input (through a 1x1 `conv_out` when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv_out = nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        return h + (x if self.conv_out is None else self.conv_out(x))


class AttnBlock(nn.Module):
    """Single-head self-attention over the pixels, 1x1 convs for q, k, v and `proj_out`, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        q, k, v = (proj(normed).reshape(b, 1, c, h * w).transpose(2, 3) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v, as the official bmm's
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Pad right and bottom by one, then a stride-2 conv3x3 (halves the size)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest x2, then conv3x3."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    """`[B, 3, img_size, img_size]` -> `[B, emb_dim, r, r]`, `r = img_size / 2**(len(ch_mult) - 1)`.

    `taps`: `{block index: resolution}` of the last ResBlock of every level, where CodeFormer takes
    the features it fuses into the generator (the official `fuse_encoder_block`).
    """

    def __init__(self, in_channels: int, nf: int, emb_dim: int, ch_mult: Sequence[int], num_res_blocks: int,
                 resolution: int, attn_resolutions: Sequence[int]):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, nf, kernel_size=3, padding=1)]
        self.taps: dict[int, int] = {}
        res, width = resolution, nf
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(width, nf * mult))
                width = nf * mult
                last = len(blocks) - 1
                if res in attn_resolutions:
                    blocks.append(AttnBlock(width))
            self.taps[last] = res
            if level != len(ch_mult) - 1:
                blocks.append(Downsample(width))
                res //= 2
        blocks += [ResBlock(width, width), AttnBlock(width), ResBlock(width, width), group_norm(width),
                   nn.Conv2d(width, emb_dim, kernel_size=3, padding=1)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class Generator(nn.Module):
    """`[B, emb_dim, r, r]` -> `[B, 3, img_size, img_size]` (the inverse pyramid of `Encoder`).

    `taps`: `{block index: resolution}` where CodeFormer fuses the encoder's features (the official
    `fuse_generator_block`): the first ResBlock of every level, the last one at the lowest level.
    """

    def __init__(self, nf: int, emb_dim: int, ch_mult: Sequence[int], res_blocks: int, img_size: int,
                 attn_resolutions: Sequence[int]):
        super().__init__()
        width = nf * ch_mult[-1]
        res = img_size // 2 ** (len(ch_mult) - 1)
        blocks: list[nn.Module] = [nn.Conv2d(emb_dim, width, kernel_size=3, padding=1),
                                   ResBlock(width, width), AttnBlock(width), ResBlock(width, width)]
        self.taps: dict[int, int] = {}
        for level in reversed(range(len(ch_mult))):
            resblocks = []
            for _ in range(res_blocks):
                blocks.append(ResBlock(width, nf * ch_mult[level]))
                width = nf * ch_mult[level]
                resblocks.append(len(blocks) - 1)
                if res in attn_resolutions:
                    blocks.append(AttnBlock(width))
            self.taps[resblocks[-1] if level == len(ch_mult) - 1 else resblocks[0]] = res
            if level != 0:
                blocks.append(Upsample(width))
                res *= 2
        blocks += [group_norm(width), nn.Conv2d(width, 3, kernel_size=3, padding=1)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class VectorQuantizer(nn.Module):
    """The codebook: `embedding.weight` `[codebook_size, emb_dim]`."""

    def __init__(self, codebook_size: int, emb_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, emb_dim)

    def lookup(self, indices: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """`[B, h*w]` code indices (row-major pixels) -> `[B, emb_dim, h, w]` codebook vectors."""
        codes = self.embedding(indices)  # [B, h*w, emb_dim]
        return codes.transpose(1, 2).reshape(codes.shape[0], codes.shape[2], *size)
