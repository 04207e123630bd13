"""Tiny seeded random-weight models for tests, benchmarks and the embedded default."""

from idgen.testing.tiny_models import (
    EMBEDDED_DEFAULT_NOTE,
    PIPELINE_KINDS,
    seeded,
    tiny_clip_vision_encoder,
    tiny_controlnet,
    tiny_pipeline,
    tiny_sd15_components,
    tiny_sdxl_components,
    tiny_svd_components,
    tiny_text_encoder,
    tiny_unet,
    tiny_vae,
)
from idgen.testing.adapters import TINY_RESAMPLER, random_faceid_state_dict, random_instantid_state_dict
from idgen.testing.tokenizer import tiny_clip_tokenizer

__all__ = [
    "EMBEDDED_DEFAULT_NOTE",
    "PIPELINE_KINDS",
    "TINY_RESAMPLER",
    "random_faceid_state_dict",
    "random_instantid_state_dict",
    "seeded",
    "tiny_clip_tokenizer",
    "tiny_clip_vision_encoder",
    "tiny_controlnet",
    "tiny_pipeline",
    "tiny_sd15_components",
    "tiny_sdxl_components",
    "tiny_svd_components",
    "tiny_text_encoder",
    "tiny_unet",
    "tiny_vae",
]
