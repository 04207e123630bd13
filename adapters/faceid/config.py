"""What an IP-Adapter-FaceID checkpoint is: the official modules' fixed sizes, the constructors'
defaults, and `FaceIDSpec` (one checkpoint's variant and sizes for one UNet)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

# Fixed by the official module definitions (`MLPProjModel`, `ProjPlusModel`, `FacePerceiverResampler`).
ID_EMBED_DIM = 512  # ArcFace
ID_MLP_MULT = 2  # proj.0: 512 -> 1024
RESAMPLER_DEPTH = 4
RESAMPLER_DIM_HEAD = 64
RESAMPLER_FF_MULT = 4
# Defaults of the official constructors (arguments there, so read from the file when possible).
DEFAULT_NUM_TOKENS = 4
DEFAULT_LORA_RANK = 128
DEFAULT_CLIP_DIM = 1280  # CLIP ViT-H/14 hidden size

#: FaceID-Portrait (`ip-adapter-faceid-portrait[-v11]_sd15.bin`, `..._sdxl.bin`): the plain projection with
#: 16 tokens per photo, several photos of one person concatenated (`n_cond`), and no LoRA.
VARIANTS = ("faceid", "faceid-plus", "faceid-plusv2", "faceid-portrait")
PORTRAIT_NUM_TOKENS = 16
LORA_TARGETS = (("to_q", "to_q"), ("to_k", "to_k"), ("to_v", "to_v"), ("to_out", "to_out.0"))


@dataclass(frozen=True)
class FaceIDSpec:
    """What a FaceID checkpoint is, for one UNet.

    Attributes:
        variant: "faceid", "faceid-plus" (v1: `shortcut=False`), "faceid-plusv2" (`shortcut=True`) or
            "faceid-portrait" (no LoRA; 16 tokens per photo).
        cross_attention_dim: the UNet's text width (768 SD1.5, 2048 SDXL); identity tokens have it.
        num_tokens: identity tokens per reference (4 in the FaceID / Plus files, 16 for Portrait).
        lora_rank: rank of the built-in LoRA (128 in every official file; 0 for Portrait: none).
        clip_dim: CLIP image-encoder hidden size (Plus only; 1280 for ViT-H).
    """

    variant: str
    cross_attention_dim: int
    num_tokens: int = DEFAULT_NUM_TOKENS
    lora_rank: int = DEFAULT_LORA_RANK
    clip_dim: Optional[int] = None

    @property
    def is_plus(self) -> bool:
        return self.variant in ("faceid-plus", "faceid-plusv2")

    @property
    def has_lora(self) -> bool:
        return self.lora_rank > 0

    @property
    def shortcut(self) -> bool:
        """Plus v2 adds the MLP tokens back onto the resampler output (`out = x + s_scale * out`)."""
        return self.variant == "faceid-plusv2"

    @property
    def resampler_heads(self) -> int:
        return self.cross_attention_dim // RESAMPLER_DIM_HEAD

    def to_dict(self) -> dict:
        return asdict(self)
