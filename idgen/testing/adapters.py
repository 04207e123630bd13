"""Random identity-adapter checkpoints in the OFFICIAL file layouts, sized for a given UNet.

Used by the tests and by the embedded default: the loaders see exactly what they would see in
`ip-adapter.bin` / `ip-adapter-faceid*.bin`, only small and random.
"""

from __future__ import annotations

from typing import Optional

import torch

from idgen.testing.tiny_models import seeded
from idgen.adapters.faceid import FaceIDSpec, expected_layout
from idgen.adapters.faceid.config import PORTRAIT_NUM_TOKENS
from idgen.adapters.instantid import InstantIDAdapter, ResamplerConfig

#: Small Resampler for tiny UNets (the official one is dim 1280, depth 4, dim_head 64, heads 20).
TINY_RESAMPLER = {"dim": 64, "depth": 2, "dim_head": 16, "heads": 4, "num_queries": 16, "embedding_dim": 512, "ff_mult": 2}


def random_instantid_state_dict(unet, seed: int = 0, resampler_config: Optional[dict] = None) -> dict:
    """`{"image_proj": {...}, "ip_adapter": {"1.to_k_ip.weight": ..., ...}}` for `unet`."""

    cfg = ResamplerConfig.from_mapping(resampler_config or TINY_RESAMPLER, output_dim=unet.config.cross_attention_dim)
    with seeded(seed):
        adapter = InstantIDAdapter.for_unet(unet, cfg)
    out: dict = {"image_proj": {}, "ip_adapter": {}}
    for key, value in adapter.state_dict().items():
        part, _, rest = key.partition(".")
        out[part][rest] = value.clone()
    return out


def random_faceid_state_dict(unet, variant: str = "faceid", *, clip_dim: Optional[int] = None, rank: int = 8,
                             seed: int = 0) -> dict:
    """A FaceID / FaceID-Plus / FaceID-Portrait state dict with the official key names and shapes for
    `unet` (`rank` instead of 128 to stay small; Portrait: 16 tokens per photo and no LoRA, as its
    files). Norm weights start near 1, as trained ones do."""

    if variant == "faceid-portrait":
        spec = FaceIDSpec(variant, int(unet.config.cross_attention_dim), num_tokens=PORTRAIT_NUM_TOKENS, lora_rank=0)
    else:
        spec = FaceIDSpec(variant, int(unet.config.cross_attention_dim), lora_rank=rank, clip_dim=clip_dim)
    generator = torch.Generator().manual_seed(seed)
    out: dict = {}
    for part, layout in expected_layout(unet, spec).items():
        out[part] = {}
        for key, shape in layout.items():
            value = torch.randn(shape, generator=generator) * (0.02 if "_lora." in key else 0.2)
            if key.endswith(("norm.weight", "norm_out.weight", "norm1.weight", "norm2.weight", ".1.0.weight")):
                value = value + 1.0
            out[part][key] = value
    return out
