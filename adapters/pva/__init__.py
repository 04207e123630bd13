"""PVA: parallel visual attention for identity-preserving face inpainting (Xu et al., WACV 2024).

- `PVAAdapter` (pipeline component): identity encoder + per-layer `to_visual_q/k/v`.
- `PVAAttnProcessor` / `PVAInputs`: the joint text+identity softmax in each cross-attention.
- `PVALoaderMixin.load_pva(path)`: idgen's saved folder or the official `FPIP.bin` unchanged.
"""

from idgen.adapters.pva.attention import PVAAttnProcessor, PVAInputs, joint_attention
from idgen.adapters.pva.encoder import MAX_REFERENCES, PVAIdentityEncoder
from idgen.adapters.pva.loader import PVALoaderMixin, convert_official_state_dict, load_pva_adapter, official_state_dict
from idgen.adapters.pva.model import PVAAdapter, pva_layers

__all__ = [
    "MAX_REFERENCES",
    "PVAAdapter",
    "PVAAttnProcessor",
    "PVAIdentityEncoder",
    "PVAInputs",
    "PVALoaderMixin",
    "convert_official_state_dict",
    "joint_attention",
    "load_pva_adapter",
    "official_state_dict",
    "pva_layers",
]
