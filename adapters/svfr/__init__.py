"""SVFR-style video face restoration on Stable Video Diffusion: widened UNet input (noisy + degraded
clip + reference latents), a task code in SVD's added time ids, ArcFace identity tokens in
cross-attention, and the long-video window schedule."""

from idgen.adapters.svfr.model import SVD_IN_CHANNELS, SVFR_IN_CHANNELS, TASK_ORDER, IDProjection, check_task_conditioning, task_vector, widen_conv_in
from idgen.adapters.svfr.windows import frame_weight_sums, triangle_weights, window_shift, window_starts

__all__ = [
    "SVD_IN_CHANNELS",
    "SVFR_IN_CHANNELS",
    "TASK_ORDER",
    "IDProjection",
    "check_task_conditioning",
    "frame_weight_sums",
    "task_vector",
    "triangle_weights",
    "widen_conv_in",
    "window_shift",
    "window_starts",
]
