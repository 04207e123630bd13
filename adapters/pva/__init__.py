"""PVA: parallel visual attention for identity-preserving face inpainting (Xu et al., WACV 2024).

- `PVAConfig`: the identity encoder's hyperparameters (`config.py`).
- `PVAAdapter` (pipeline component): identity encoder (`PVAIdentityEncoder`) + per-layer
  `to_visual_q/k/v` (`model.py`).
- `PVAAttnProcessor` / `PVAInputs`: the joint text+identity softmax in each cross-attention, on the
  shared SDPA prologue/epilogue (`attention.py`).
- `PVALoaderMixin`: `load_pva(path)` (idgen's saved folder or the official `FPIP.bin` unchanged),
  `set_identity_scale`, `unload_pva`, `init_pva` (training); `load_pva_adapter`,
  `official_key_map`, `convert_official_state_dict` / `official_state_dict` (`loader.py`).
"""

from idgen.adapters.pva.attention import PVAAttnProcessor, PVAInputs, joint_attention
from idgen.adapters.pva.config import DEFAULT_IDENTITY_SCALE, OFFICIAL_NUM_HEADS, PVAConfig, check_identity_scale
from idgen.adapters.pva.encoder import MAX_REFERENCES, PVAIdentityEncoder
from idgen.adapters.pva.loader import (
    PVALoaderMixin,
    convert_official_state_dict,
    load_pva_adapter,
    official_key_map,
    official_state_dict,
)
from idgen.adapters.pva.model import PVAAdapter, pva_layers

__all__ = [
    "DEFAULT_IDENTITY_SCALE",
    "MAX_REFERENCES",
    "OFFICIAL_NUM_HEADS",
    "PVAAdapter",
    "PVAAttnProcessor",
    "PVAConfig",
    "PVAIdentityEncoder",
    "PVAInputs",
    "PVALoaderMixin",
    "check_identity_scale",
    "convert_official_state_dict",
    "joint_attention",
    "load_pva_adapter",
    "official_key_map",
    "official_state_dict",
    "pva_layers",
]
