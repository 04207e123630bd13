"""Random standard IP-Adapter checkpoints (the style reference of InstantStyle) in the OFFICIAL file
layout (`ip-adapter_sd15.bin` / `ip-adapter_sdxl.bin`: `image_proj.proj.*`, `image_proj.norm.*`,
`ip_adapter.{k}.to_k_ip.weight` ...; Plus: the perceiver resampler), sized for a tiny UNet and a
tiny CLIP image encoder."""

from __future__ import annotations

import torch

from idgen.adapters.faceid.layout import processor_names
from idgen.adapters.instantid.resampler import Resampler, ResamplerConfig
from idgen.testing.tiny_models import seeded

#: Tiny Plus resampler; diffusers' converter assumes the official depth 4, ff_mult 4 and 64-wide heads.
TINY_STYLE_RESAMPLER = {"dim": 64, "depth": 4, "dim_head": 64, "heads": 1, "num_queries": 8, "ff_mult": 4}


def _ip_adapter(unet, generator) -> dict:
    out = {}
    for k, name in enumerate(processor_names(unet)):
        if k % 2 == 1:
            to_k = unet.get_submodule(name[: -len(".processor")]).to_k
            for proj in ("to_k_ip", "to_v_ip"):
                out[f"{k}.{proj}.weight"] = torch.randn(to_k.out_features, to_k.in_features, generator=generator) * 0.2
    return out


def random_style_state_dict(unet, clip_dim: int = 32, *, kind: str = "ip-adapter", seed: int = 0) -> dict:
    """`{"image_proj": {...}, "ip_adapter": {...}}` of a standard IP-Adapter for `unet`.

    Args:
        clip_dim: CLIP width the projection takes (the tiny encoder's 32: its `projection_dim` for
            the plain kind, its `hidden_size` for Plus).
        kind: "ip-adapter" (plain `ImageProjModel`, 4 tokens) or "ip-adapter-plus" (resampler).
    """
    d = int(unet.config.cross_attention_dim)
    generator = torch.Generator().manual_seed(seed)
    if kind == "ip-adapter":
        image_proj = {
            "proj.weight": torch.randn(4 * d, clip_dim, generator=generator) * 0.2,
            "proj.bias": torch.randn(4 * d, generator=generator) * 0.2,
            "norm.weight": 1.0 + torch.randn(d, generator=generator) * 0.1,
            "norm.bias": torch.randn(d, generator=generator) * 0.1,
        }
    elif kind == "ip-adapter-plus":
        config = ResamplerConfig(**TINY_STYLE_RESAMPLER, embedding_dim=clip_dim, output_dim=d)
        with seeded(seed):
            image_proj = {k: v.clone() for k, v in Resampler(config).state_dict().items()}
    else:
        raise ValueError(f"kind must be 'ip-adapter' or 'ip-adapter-plus', got {kind!r}.")
    return {"image_proj": image_proj, "ip_adapter": _ip_adapter(unet, generator)}
