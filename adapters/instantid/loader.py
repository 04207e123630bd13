"""Loading InstantID's official `ip-adapter.bin` into a pipeline.

Layers, as diffusers' loaders: `official_key_map` / `convert_official_state_dict` (file -> the
`InstantIDAdapter` state dict, checked key by key) and its inverse `official_state_dict`,
`load_instantid_adapter` (state dict -> module, built on the meta device so nothing is allocated
twice), `identity_processors_installed` (the UNet's identity processors for one call), and
`InstantIDLoaderMixin` for pipelines (`load_instantid`, `set_identity_scale`, `unload_instantid`).
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from typing import Iterator, Mapping, Optional, Union

import torch

from diffusers.loaders.unet_loader_utils import _maybe_expand_lora_scales
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

from idgen.checkpoint import PathOrStateDict, check_state_dict, resolve_state_dict, split_prefixed
from idgen.deprecation import REMOVAL
from idgen.errors import CheckpointError, IdgenError

from idgen.adapters.instantid.attention import InstantIDAttnProcessor
from idgen.adapters.instantid.model import InstantIDAdapter
from idgen.adapters.instantid.resampler import ResamplerConfig
from idgen.adapters.style.loader import StyleAdapterLoaderMixin, check_block_names

CHECKPOINT_NAME = "InstantID adapter (ip-adapter.bin)"
DEFAULT_IDENTITY_SCALE = 0.8
ScaleConfig = Union[float, Mapping]


def official_key_map(adapter: InstantIDAdapter) -> dict[str, str]:
    """`{official key: adapter state-dict key}`, in the official file's order.

    Official keys are written `image_proj.<key>` and `ip_adapter.<key>` (the two sub-dicts of
    `ip-adapter.bin`, or a flat safetensors file with those prefixes). The module tree mirrors the
    official one, so the map is one-to-one without renaming; it is still spelled out so that the
    check below names the first missing/misshaped key in the official file's own terms.
    """
    mapping = {f"image_proj.{k}": f"image_proj.{k}" for k in adapter.image_proj.state_dict()}
    for k in adapter.ip_adapter.keys():
        for proj in ("to_k_ip", "to_v_ip"):
            mapping[f"ip_adapter.{k}.{proj}.weight"] = f"ip_adapter.{k}.{proj}.weight"
    return mapping


def official_state_dict(adapter: InstantIDAdapter) -> dict[str, torch.Tensor]:
    """The inverse of `convert_official_state_dict`: `adapter`'s weights under the official
    `ip-adapter.bin` key names (flat `image_proj.*` / `ip_adapter.*`), as idgen's trainer writes them."""
    own = adapter.state_dict()
    return {official: own[ours] for official, ours in official_key_map(adapter).items()}


def convert_official_state_dict(state_dict: Mapping[str, object], adapter: InstantIDAdapter) -> dict:
    """Official checkpoint dict -> `adapter` state dict, checking every key and shape.

    Raises:
        CheckpointError: naming the first missing, misshaped or unexpected key (with a hint at the
            Resampler hyperparameters when the projection does not fit).
    """
    parts = split_prefixed(state_dict, ("image_proj", "ip_adapter"), what=CHECKPOINT_NAME)
    if not parts["image_proj"] and not parts["ip_adapter"]:
        first = next(iter(state_dict), None)
        raise CheckpointError(
            f"{CHECKPOINT_NAME}: neither an 'image_proj' nor an 'ip_adapter' part was found (first key "
            f"{first!r}); this is not an InstantID adapter file."
        )
    stray = [k for k in state_dict if k not in ("image_proj", "ip_adapter") and k.partition(".")[0] not in ("image_proj", "ip_adapter")]
    if stray:
        raise CheckpointError(
            f"{CHECKPOINT_NAME}: unexpected key {stray[0]!r} ({len(stray)} outside 'image_proj'/'ip_adapter'); "
            "this is not an InstantID adapter file."
        )
    flat = {f"{p}.{k}": v for p in ("image_proj", "ip_adapter") for k, v in parts[p].items()}
    mapping = official_key_map(adapter)
    target = adapter.state_dict()
    expected = {official: tuple(target[ours].shape) for official, ours in mapping.items()}
    try:
        check_state_dict(flat, expected, what=CHECKPOINT_NAME)
    except CheckpointError as e:
        raise CheckpointError(str(e) + _resampler_hint(parts["image_proj"], adapter)) from None
    return {mapping[k]: flat[k] for k in mapping}


def _resampler_hint(image_proj: Mapping[str, object], adapter: InstantIDAdapter) -> str:
    """When the file's Resampler differs from the configured one, say what the file looks like."""
    try:
        dim, nq = image_proj["latents"].shape[2], image_proj["latents"].shape[1]
        found = {
            "dim": int(dim),
            "num_queries": int(nq),
            "embedding_dim": int(image_proj["proj_in.weight"].shape[1]),
            "output_dim": int(image_proj["proj_out.weight"].shape[0]),
            "depth": len({m.group(1) for k in image_proj if (m := re.match(r"layers\.(\d+)\.", k))}),
            "ff_mult": int(image_proj["layers.0.1.1.weight"].shape[0]) // int(dim),
        }
        inner = int(image_proj["layers.0.0.to_q.weight"].shape[0])
    except (KeyError, IndexError, AttributeError, TypeError, ZeroDivisionError):
        return ""
    ours = adapter.config
    if all(found[k] == ours[k] for k in found) and inner == ours["heads"] * ours["dim_head"]:
        return ""
    return (
        f" The file's Resampler looks like {found} with heads*dim_head={inner}; configured: "
        f"{ {k: ours[k] for k in found} } with heads*dim_head={ours['heads'] * ours['dim_head']}. "
        "Pass `resampler_config=` with the file's hyperparameters."
    )


def load_instantid_adapter(
    source: PathOrStateDict,
    unet,
    *,
    resampler_config: Optional[Mapping[str, int]] = None,
    device=None,
    dtype: Optional[torch.dtype] = None,
) -> InstantIDAdapter:
    """Build an `InstantIDAdapter` for `unet` and load the official checkpoint `source` into it.

    The module is created on the meta device and the checkpoint tensors are assigned to it, so
    nothing is allocated twice (with meta tensors in `source` nothing is allocated at all).
    `resampler_config` overrides the official Resampler hyperparameters (`ResamplerConfig`).
    """
    cfg = ResamplerConfig.from_mapping(resampler_config, output_dim=unet.config.cross_attention_dim)
    state_dict = resolve_state_dict(source)
    with torch.device("meta"):
        adapter = InstantIDAdapter.for_unet(unet, cfg)
    converted = convert_official_state_dict(state_dict, adapter)
    adapter.load_state_dict(converted, strict=True, assign=True)
    if device is not None or (dtype is not None and dtype != adapter.dtype):
        # nn.Module.to: diffusers' ModelMixin.to warns about fp32 modules on every dtype cast.
        torch.nn.Module.to(adapter, device=device, dtype=dtype)
    return adapter.eval().requires_grad_(False)


def expand_identity_scale(unet, layer_names: Mapping[int, str], scale: ScaleConfig, *, what: str) -> dict[int, float]:
    """`{k: scale}` for every identity layer from a float or a diffusers block dict
    (`{"down": {"block_2": [0.0, 1.0]}, "up": {"block_0": [0.0, 1.0, 0.0]}, "mid": 0.5}`; blocks not
    named get 0, as in diffusers' `set_ip_adapter_scale`)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float, Mapping)):
        raise IdgenError(f"{what} must be a number or a block dict, got {type(scale).__name__}.")
    if not isinstance(scale, Mapping):
        if not math.isfinite(float(scale)):
            raise IdgenError(f"{what} must be finite, got {scale}.")
        return {k: float(scale) for k in layer_names}

    check_block_names(unet, scale, what=what)
    try:
        per_block = _maybe_expand_lora_scales(unet, [dict(scale)], default_scale=0.0)[0]
    except (ValueError, KeyError, TypeError) as e:
        raise IdgenError(f"{what}: {e}") from None
    out = {}
    for k, name in layer_names.items():
        value = 0.0
        for prefix, s in per_block.items():
            if name.startswith(prefix + "."):
                value = s
        if isinstance(value, (list, tuple)):
            raise IdgenError(f"{what}: give one scale per transformer layer, not per image.")
        out[k] = float(value)
    return out


def identity_attn_processors(unet, adapter: InstantIDAdapter) -> dict[str, object]:
    """`unet.attn_processors` with an `InstantIDAttnProcessor` on every layer listed by `adapter`
    (the others keep their processor: sliced, xformers, ...).

    Raises:
        IdgenError: the adapter was made for another UNet layout.
    """
    current = unet.attn_processors
    names = list(adapter.config.processor_names)
    if set(names) != set(current):
        raise IdgenError(
            "the identity_adapter was made for another UNet layout (its attention processors "
            f"{names[:2]}... do not match this UNet's {list(current)[:2]}...)."
        )
    layers = adapter.layer_names

    def identity_processor(k, previous):
        # an image IP-Adapter's processor (the style reference) is kept inside, for its K/V and scales
        return InstantIDAttnProcessor(k, ip_processor=previous if isinstance(previous, IPAdapterAttnProcessor2_0) else None)

    return {name: identity_processor(k, current[name]) if k in layers else current[name] for k, name in enumerate(names)}


@contextlib.contextmanager
def identity_processors_installed(unet, adapter: InstantIDAdapter) -> Iterator[None]:
    """Install the identity processors in `unet` for the `with` block only, then put every original
    processor back. The UNet may be shared with other pipelines (`from_pipe`, `**pipe.components`),
    and `enable_attention_slicing` & co. may replace processors between calls, so nothing stays
    installed between calls. The identity processors hold no weights, so this costs nothing."""
    saved = unet.attn_processors
    unet.set_attn_processor(identity_attn_processors(unet, adapter))
    try:
        yield
    finally:
        unet.set_attn_processor(saved)


class InstantIDLoaderMixin(StyleAdapterLoaderMixin):
    """Pipeline mixin: the `identity_adapter` component and its default scale (`identity_scale` in
    the pipeline config). The UNet's processors are installed per call, never here. A style
    reference (`load_style_adapter`, then `ip_adapter_image`) lives in the UNet as diffusers'
    IP-Adapter state; the identity processors carry it for the call (`identity_attn_processors`)."""

    def load_instantid(
        self,
        adapter_path_or_state_dict: PathOrStateDict,
        *,
        resampler_config: Optional[Mapping[str, int]] = None,
        scale: ScaleConfig = DEFAULT_IDENTITY_SCALE,
    ) -> None:
        """Load InstantID's `ip-adapter.bin` (path, or the dict it holds) unchanged.

        Args:
            adapter_path_or_state_dict: `.bin`/`.safetensors` path, or a dict with `image_proj` and
                `ip_adapter` sub-dicts (or flat `image_proj.*` / `ip_adapter.*` keys).
            resampler_config: Resampler hyperparameters overriding the official ones (dim 1280,
                depth 4, dim_head 64, heads 20, num_queries 16, embedding_dim 512, ff_mult 4).
            scale: the default identity scale (float or block dict), see `set_identity_scale`.

        Raises:
            CheckpointError: the file is unreadable or a key is missing/misshaped/unexpected.
        """
        adapter = load_instantid_adapter(
            adapter_path_or_state_dict, self.unet, resampler_config=resampler_config,
            device=self.unet.device, dtype=self.unet.dtype,
        )
        self.register_modules(identity_adapter=adapter)
        self.set_identity_scale(scale)

    def set_identity_scale(self, scale: ScaleConfig) -> None:
        """Set the default identity scale: a float, or a diffusers block dict for per-block scales
        (`{"down": {"block_2": [0.0, 1.0]}, "up": {"block_0": [0.0, 1.0, 0.0]}}`). Stored in the
        pipeline config, so it survives `save_pretrained`/`from_pretrained`."""
        if getattr(self, "identity_adapter", None) is None:
            raise IdgenError("no InstantID adapter is loaded; call `load_instantid(...)` first.")
        expand_identity_scale(self.unet, self.identity_adapter.layer_names, scale, what="scale")
        self.register_to_config(identity_scale=_jsonable(scale))

    @property
    def default_identity_scale(self):
        """The identity scale of a call that gives none (`set_identity_scale`, kept in the config)."""
        return self.config.identity_scale

    def set_ip_adapter_scale(self, scale: ScaleConfig) -> None:
        """Old name of `set_identity_scale` (overrides diffusers' IP-Adapter method of that name)."""
        warnings.warn(
            f"`set_ip_adapter_scale` is deprecated and will be removed in {REMOVAL}; use `set_identity_scale`.",
            FutureWarning, stacklevel=2,
        )
        self.set_identity_scale(scale)

    def unload_instantid(self) -> None:
        """Remove the identity branch (the `identity_adapter` component)."""
        self.register_modules(identity_adapter=None)


def _jsonable(scale: ScaleConfig):
    if isinstance(scale, Mapping):
        return {str(k): _jsonable(v) for k, v in scale.items()}
    if isinstance(scale, (list, tuple)):
        return [_jsonable(v) for v in scale]
    return float(scale)
