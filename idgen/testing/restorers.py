"""Tiny seeded random face restorers and parser of the official architectures: the embedded
default of `--enhance` (they only prove the plumbing) and test fixtures."""

from __future__ import annotations

from torch import nn

from idgen.errors import IdgenError
from idgen.face.parsing import FaceParser, random_bisenet_state_dict
from idgen.restorers.codeformer import CodeFormer
from idgen.restorers.gfpgan import GFPGAN
from idgen.restorers.restoreformer import RestoreFormerPP
from idgen.testing.tiny_models import seeded

#: The tiny restorers' crop size.
TINY_CROP_SIZE = 64


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
