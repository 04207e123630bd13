"""InstantID: perceiver Resampler + decoupled identity attention + IdentityNet (a ControlNet).

- `Resampler`, `ResamplerConfig`: ArcFace embedding -> identity tokens (official module tree).
- `InstantIDAdapter`: the pipeline component holding every weight of `ip-adapter.bin`.
- `InstantIDAttnProcessor`, `IdentityAttentionInputs`: text attention + scale x identity attention.
- `InstantIDLoaderMixin`: `load_instantid`, `set_identity_scale`, `unload_instantid`;
  `load_instantid_adapter`, `convert_official_state_dict` / `official_state_dict` (file <-> module
  keys), `official_key_map`; `identity_processors_installed` (the UNet's processors for one call).
"""

from idgen.adapters.instantid.attention import IdentityAttentionInputs, InstantIDAttnProcessor
from idgen.adapters.instantid.loader import (
    DEFAULT_IDENTITY_SCALE,
    InstantIDLoaderMixin,
    convert_official_state_dict,
    expand_identity_scale,
    identity_attn_processors,
    identity_processors_installed,
    load_instantid_adapter,
    official_key_map,
    official_state_dict,
)
from idgen.adapters.instantid.model import IdentityKV, InstantIDAdapter, attn_processor_order, identity_layers
from idgen.adapters.instantid.resampler import PerceiverAttention, Resampler, ResamplerConfig

__all__ = [
    "DEFAULT_IDENTITY_SCALE",
    "IdentityAttentionInputs",
    "IdentityKV",
    "InstantIDAdapter",
    "InstantIDAttnProcessor",
    "InstantIDLoaderMixin",
    "PerceiverAttention",
    "Resampler",
    "ResamplerConfig",
    "attn_processor_order",
    "convert_official_state_dict",
    "expand_identity_scale",
    "identity_attn_processors",
    "identity_layers",
    "identity_processors_installed",
    "load_instantid_adapter",
    "official_key_map",
    "official_state_dict",
]
