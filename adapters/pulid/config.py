"""PuLID hyperparameters: the official sizes (v1 `IDEncoder`, v1.1 `IDFormer`, EVA02-CLIP-L-14-336)
and the inference modes of the official demos, plus tiny sizes for tests.

Official sources: `pulid/encoders.py`, `pulid/encoders_transformer.py`,
`eva_clip/model_configs/EVA02-CLIP-L-14-336.json`, `app.py` (v1 modes) and `app_v1_1.py` (v1.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from idgen.errors import IdgenError

Version = Literal["v1", "v1.1"]
Ortho = Literal["off", "v1", "v2"]
VERSIONS = ("v1", "v1.1")

#: ArcFace (antelopev2) embedding width; the ID condition is `[arcface 512, EVA-CLIP embedding]`.
ARCFACE_DIM = 512
#: The EVA-CLIP file PuLID uses (QuanSun/EVA-CLIP on the Hugging Face Hub).
EVA_CLIP_FILE = "EVA02_CLIP_L_336_psz14_s6B.pt"
#: EVA-CLIP's input normalisation (OpenAI CLIP's mean / std, as the official pipeline reads them).
EVA_MEAN = (0.48145466, 0.4578275, 0.40821073)
EVA_STD = (0.26862954, 0.26130258, 0.27577711)
#: Side of the aligned face crop (facexlib `FaceRestoreHelper(face_size=512)`, FFHQ template).
FACE_CROP_SIZE = 512
#: BiSeNet (facexlib) parsing labels that are background for PuLID: background, neck, cloth, ears,
#: earring, hat, hair... (`bg_label` of the official `get_id_embedding`).
PARSING_BACKGROUND_LABELS = (0, 16, 18, 7, 8, 9, 14, 15)
#: Tokens whose summed attention weighs the projection in ortho "v2" (hard-coded 5 in the official code).
ORTHO_V2_TOKENS = 5


@dataclass(frozen=True)
class PuLIDMode:
    """How the ID attention is added: `num_zero` zero tokens appended to the ID tokens (their keys
    and values are zero: they only dilute the attention) and the orthogonalisation `ortho`."""

    num_zero: int
    ortho: Ortho


#: The official demos' modes: v1 `app.py` ("fidelity" / "extremely style"); v1.1 `app_v1_1.py` has
#: one (its num_zero slider defaults to 20, its hidden ortho choice to "v2"); `num_zero` / `ortho`
#: override a mode, as v1.1's advanced options do.
MODES: dict[str, dict[str, PuLIDMode]] = {
    "v1": {"fidelity": PuLIDMode(8, "v2"), "extremely style": PuLIDMode(16, "v1")},
    "v1.1": {"fidelity": PuLIDMode(20, "v2")},
}
DEFAULT_MODE = "fidelity"
DEFAULT_IDENTITY_SCALE = 0.8


def resolve_mode(version: str, mode: str, num_zero=None, ortho=None) -> PuLIDMode:
    """The `PuLIDMode` of `mode` for `version`, with `num_zero` / `ortho` overriding it.

    Raises:
        IdgenError: unknown mode, `num_zero` not an int >= 0, `ortho` not "off" / "v1" / "v2".
    """
    modes = MODES[version]
    if mode not in modes:
        raise IdgenError(f"PuLID {version}: `mode` must be one of {sorted(modes)}, got {mode!r}.")
    base = modes[mode]
    if num_zero is not None and (isinstance(num_zero, bool) or not isinstance(num_zero, int) or num_zero < 0):
        raise IdgenError(f"`num_zero` must be an integer >= 0, got {num_zero!r}.")
    if ortho is not None and ortho not in ("off", "v1", "v2"):
        raise IdgenError(f"`ortho` must be 'off', 'v1' or 'v2', got {ortho!r}.")
    return PuLIDMode(base.num_zero if num_zero is None else num_zero, base.ortho if ortho is None else ortho)


#: EVA02-CLIP-L-14-336 vision tower (`EVAVisionTransformer` keyword names).
EVA02_L_336 = dict(image_size=336, patch_size=14, width=1024, depth=24, heads=16, mlp_ratio=2.6667,
                   embed_dim=768, pt_hw_seq_len=16)
#: Tiny tower for tests: 21 blocks so that the 5 hidden states PuLID reads (before blocks 4, 8,
#: 12, 16 and 20) exist, 4x4 patches, head width 16 (2-D RoPE on 8 + 8 channels).
TINY_EVA = dict(image_size=56, patch_size=14, width=32, depth=21, heads=2, mlp_ratio=2.6667,
                embed_dim=24, pt_hw_seq_len=16)

#: v1 `IDEncoder(width=1280, context_dim=2048, num_token=5)` (mapping MLPs 1024 wide).
ID_ENCODER_V1 = dict(id_dim=ARCFACE_DIM + 768, vit_width=1024, mapping_dim=1024, context_dim=2048, num_token=5)
#: v1.1 `IDFormer()` defaults.
ID_FORMER_V11 = dict(id_dim=ARCFACE_DIM + 768, vit_width=1024, mapping_dim=1024, dim=1024, depth=10, dim_head=64,
                     heads=16, num_id_token=5, num_queries=32, output_dim=2048, ff_mult=4)
#: Tiny encoders for `TINY_EVA` and idgen's tiny SDXL UNet (cross-attention 64).
TINY_ID_ENCODER_V1 = dict(id_dim=ARCFACE_DIM + 24, vit_width=32, mapping_dim=48, context_dim=64, num_token=5)
TINY_ID_FORMER_V11 = dict(id_dim=ARCFACE_DIM + 24, vit_width=32, mapping_dim=48, dim=32, depth=5, dim_head=16,
                          heads=2, num_id_token=5, num_queries=8, output_dim=64, ff_mult=2)


def check_version(version: str) -> str:
    if version not in VERSIONS:
        raise IdgenError(f"PuLID `version` must be 'v1' or 'v1.1' (or 'auto' when loading), got {version!r}.")
    return version
