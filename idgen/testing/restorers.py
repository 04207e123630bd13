"""Tiny seeded random face restorers and parser of the official architectures: the embedded
default of `--enhance` (they only prove the plumbing) and test fixtures."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import nn

from idgen.errors import IdgenError
from idgen.face.parsing import FaceParser, random_bisenet_state_dict
from idgen.restorers.codeformer import CodeFormer
from idgen.restorers.gfpgan import GFPGAN
from idgen.restorers.restoreformer import RestoreFormerPP
from idgen.testing.tiny_models import seeded

#: The tiny restorers' crop size.
TINY_CROP_SIZE = 64
#: `seeded_state_dict`'s options for RestoreFormer's parity case: only convs scaled by their fan-in,
#: the codebook as drawn.
RESTOREFORMER_WEIGHT_RECIPE = {"fan_in_ranks": (4,), "raw": ("embedding.weight",)}


def tiny_restorer(name: str, seed: int = 0) -> nn.Module:
    """A random restorer `name` ("gfpgan", ...) of `TINY_CROP_SIZE` crops, eval mode, CPU."""
    builders = {
        "codeformer": lambda: CodeFormer(dim_embd=32, n_head=2, n_layers=2, codebook_size=64, latent_size=256,
                                         connect_list=("16", "32", "64"), img_size=TINY_CROP_SIZE, nf=32,
                                         ch_mult=(1, 2, 2), attn_resolutions=(16,)),
        "gfpgan": lambda: GFPGAN(out_size=TINY_CROP_SIZE, num_style_feat=16, narrow=1 / 32),
        "restoreformer": lambda: RestoreFormerPP(n_embed=64, embed_dim=16, ch=32, ch_mult=(1, 2, 2),
                                                 attn_resolutions=(16,), resolution=TINY_CROP_SIZE, z_channels=32),
    }
    if name not in builders:
        raise IdgenError(f"no tiny restorer {name!r}; known: {', '.join(builders)}.")
    with seeded(seed):
        return builders[name]().eval()


def tiny_face_parser(seed: int = 0) -> FaceParser:
    """BiSeNet at its official size (it has no size knobs; 13 M parameters) with seeded random weights."""
    return FaceParser.from_state_dict(random_bisenet_state_dict(seed))


def seeded_state_dict(shapes: Mapping[str, Sequence[int]], seed: int, *, fan_in_ranks: Sequence[int] = range(2, 9),
                      raw: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Weights for `{key: shape}` from `seed` alone (the parity cases' recipe, so the official and
    idgen's modules get the same numbers): one CPU `torch.Generator`, keys in sorted order, a
    `torch.randn(shape)` each, divided by `sqrt(prod(shape[1:]))` for tensors whose rank is in
    `fan_in_ranks` (activations stay O(1)), unchanged for keys ending in one of `raw`, `1 + 0.1 x`
    for the other `.weight`s (norm scales), `0.1 x` for the rest (biases: all non-zero)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        w = torch.randn(shape, generator=generator)
        if len(shape) in fan_in_ranks:
            w = w / math.sqrt(math.prod(shape[1:]))
        elif raw and key.endswith(raw):
            pass
        elif key.endswith(".weight"):
            w = 1 + 0.1 * w
        else:
            w = 0.1 * w
        out[key] = w
    return out
