"""Tiny seeded PuLID parts for tests and benchmarks: an EVA02-CLIP-shaped vision tower and random
PuLID checkpoints in the OFFICIAL file layout (`id_adapter.*`, `id_adapter_attn_layers.*`).

Weights are drawn with a std that keeps activations O(1) through 21 blocks and the ID branch
visible in a 2-step tiny generation (norm weights near 1, as trained ones are).
"""

from __future__ import annotations

import torch

from idgen.adapters.pulid.config import TINY_EVA, TINY_ID_ENCODER_V1, TINY_ID_FORMER_V11, check_version
from idgen.adapters.pulid.eva_clip import EVACLIPVisionModel
from idgen.adapters.pulid.model import PuLIDAdapter
from idgen.testing.tiny_models import seeded


def _randomise(module: torch.nn.Module, seed: int, std: float) -> dict:
    """`module`'s state dict filled with N(0, std) (LayerNorm weights 1 + N(0, std)), seeded."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in module.state_dict().items():
        noise = torch.randn(value.shape, generator=generator) * std
        if _is_layer_norm(module, key):
            noise = noise + 1.0
        out[key] = noise
    return out


def _is_layer_norm(module: torch.nn.Module, key: str) -> bool:
    owner = module.get_submodule(key.rpartition(".")[0]) if "." in key else module
    return isinstance(owner, torch.nn.LayerNorm) and key.endswith(".weight")


def tiny_eva_clip(seed: int = 0) -> EVACLIPVisionModel:
    """`EVACLIPVisionModel` of `TINY_EVA` (56 px, 4x4 patches, 21 blocks of width 32) with random weights."""
    with seeded(seed):
        model = EVACLIPVisionModel(**TINY_EVA)
    model.load_state_dict(_randomise(model, seed, 0.1))
    return model.eval()


def random_pulid_state_dict(unet, version: str = "v1", seed: int = 0, encoder: dict = None) -> dict:
    """A flat `{"id_adapter.*": ..., "id_adapter_attn_layers.{k}.id_to_k.weight": ...}` for `unet`
    (the keys of the official `pulid_v1.bin` / `pulid_v1.1.safetensors`), tiny encoder by default."""
    check_version(version)
    encoder = encoder or (TINY_ID_ENCODER_V1 if version == "v1" else TINY_ID_FORMER_V11)
    with torch.device("meta"):
        adapter = PuLIDAdapter.for_unet(unet, version, encoder)
    adapter = adapter.to_empty(device="cpu")
    return _randomise(adapter, seed, 0.15)


def tiny_pulid_parts(unet, version: str = "v1", seed: int = 0) -> tuple[dict, EVACLIPVisionModel]:
    """`(random PuLID state dict for unet, tiny EVA tower)`: what `load_pulid(state_dict, eva_clip=tower)` takes."""
    return random_pulid_state_dict(unet, version, seed), tiny_eva_clip(seed + 1)
