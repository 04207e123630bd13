"""The released base UNets' configurations, to check official adapter files at full size without
their weights: `meta_unet(SDXL_UNET)` builds the real architecture on the meta device (no memory)."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

#: runwayml/stable-diffusion-v1-5 `unet/config.json` (the sizes that shape adapter files).
SD15_UNET = dict(
    sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
    attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
#: stabilityai/stable-diffusion-xl-base-1.0 `unet/config.json` (the sizes that shape adapter files).
SDXL_UNET = dict(
    sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2, cross_attention_dim=2048,
    attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)


def meta_unet(config: dict) -> UNet2DConditionModel:
    """A `UNet2DConditionModel` of `config` on the meta device (shapes only, nothing allocated)."""
    with torch.device("meta"):
        return UNet2DConditionModel(**config)
