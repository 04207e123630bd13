"""PuLID (v1 and v1.1) for SDXL: ID tokens from ArcFace + EVA02-CLIP, added by an ID attention
(optionally orthogonalised) in every UNet cross-attention.

- `EVACLIPVisionModel`: the EVA02-CLIP-L-14-336 vision tower (official `visual.*` keys).
- `IDEncoder` (v1), `IDFormer` (v1.1): condition + EVA hidden states -> ID tokens.
- `PuLIDAdapter`: the component holding every weight of `pulid_v1.bin` / `pulid_v1.1.safetensors`.
- `PuLIDAttnProcessor`, `PuLIDAttentionInputs`, `add_id_attention`: the ID attention and its modes.
- `PuLIDLoaderMixin` (`load_pulid`, `set_identity_scale`, `unload_pulid`), `load_pulid_adapter`,
  `load_eva_clip`, `pulid_processors_installed`.
"""

from idgen.adapters.pulid.attention import PuLIDAttentionInputs, PuLIDAttnProcessor, add_id_attention
from idgen.adapters.pulid.config import (
    DEFAULT_IDENTITY_SCALE,
    DEFAULT_MODE,
    EVA02_L_336,
    EVA_CLIP_FILE,
    MODES,
    PuLIDMode,
    resolve_mode,
)
from idgen.adapters.pulid.encoder import IDEncoder, IDFormer
from idgen.adapters.pulid.eva_clip import EVACLIPVisionModel
from idgen.adapters.pulid.loader import (
    PuLIDLoaderMixin,
    load_eva_clip,
    load_pulid_adapter,
    pulid_processors_installed,
)
from idgen.adapters.pulid.model import PuLIDAdapter

__all__ = [
    "DEFAULT_IDENTITY_SCALE",
    "DEFAULT_MODE",
    "EVA02_L_336",
    "EVA_CLIP_FILE",
    "EVACLIPVisionModel",
    "IDEncoder",
    "IDFormer",
    "MODES",
    "PuLIDAdapter",
    "PuLIDAttentionInputs",
    "PuLIDAttnProcessor",
    "PuLIDLoaderMixin",
    "PuLIDMode",
    "add_id_attention",
    "load_eva_clip",
    "load_pulid_adapter",
    "pulid_processors_installed",
    "resolve_mode",
]
