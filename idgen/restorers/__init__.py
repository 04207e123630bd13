"""Face restorers that load the official weights unchanged (CodeFormer, GFPGAN v1.3/v1.4,
RestoreFormer++ / RestoreFormer): each a torch module `[B, 3, 512, 512]` in [-1, 1] RGB -> the
same, with a loader that checks the official file's keys; and the face post-pass (`FaceEnhancer`)
that restores every face of an image and pastes it back."""

from idgen.restorers.codeformer import CODEFORMER_FILE, CodeFormer, load_codeformer
from idgen.restorers.enhance import EnhanceOptions, FaceEnhancer
from idgen.restorers.gfpgan import GFPGAN, GFPGAN_FILES, load_gfpgan
from idgen.restorers.kinds import RESTORERS, RestorerKind, restorer_function, restorer_kind
from idgen.restorers.restoreformer import RESTOREFORMER_FILES, RestoreFormerPP, load_restoreformer

__all__ = [
    "CODEFORMER_FILE", "CodeFormer", "load_codeformer", "EnhanceOptions", "FaceEnhancer", "GFPGAN", "GFPGAN_FILES",
    "load_gfpgan", "RESTORERS", "RestorerKind", "restorer_function", "restorer_kind", "RESTOREFORMER_FILES",
    "RestoreFormerPP", "load_restoreformer",
]
