"""SVFR-style video face restoration on Stable Video Diffusion: widened UNet input (noisy + degraded
clip + reference latents), a task code in SVD's added time ids, ArcFace identity tokens in
cross-attention, and the long-video window schedule.

- `config.py`: `TASK_ORDER`, the input channels, `SVFRConfig` (the released weights' shapes).
- `model.py`: `IDProjection` (pipeline component), `widen_conv_in`, `task_vector`,
  `check_task_conditioning`.
- `loader.py`: `load_svfr_unet`, `load_id_projection`, `init_svfr` (training), `official_key_map`,
  `convert_official_state_dict` / `official_state_dict`. No attention processor and no identity
  scale: the tokens are the context of SVD's own cross-attention (see `loader.py`).
- `windows.py`: the long-video window schedule.
"""

from idgen.adapters.svfr.config import IDENTITY_CHANNELS, SVD_IN_CHANNELS, SVFR_IN_CHANNELS, TASK_ORDER, SVFRConfig
from idgen.adapters.svfr.loader import (
    convert_official_state_dict,
    init_svfr,
    load_id_projection,
    load_svfr_unet,
    official_key_map,
    official_state_dict,
)
from idgen.adapters.svfr.model import IDProjection, check_task_conditioning, task_vector, widen_conv_in
from idgen.adapters.svfr.windows import frame_weight_sums, triangle_weights, window_shift, window_starts

__all__ = [
    "IDENTITY_CHANNELS",
    "SVD_IN_CHANNELS",
    "SVFR_IN_CHANNELS",
    "TASK_ORDER",
    "IDProjection",
    "SVFRConfig",
    "check_task_conditioning",
    "convert_official_state_dict",
    "frame_weight_sums",
    "init_svfr",
    "load_id_projection",
    "load_svfr_unet",
    "official_key_map",
    "official_state_dict",
    "task_vector",
    "triangle_weights",
    "widen_conv_in",
    "window_shift",
    "window_starts",
]
