"""Loading PuLID's official files into a pipeline.

- `load_pulid_adapter`: `pulid_v1.bin` / `pulid_v1.1.safetensors` (flat `id_adapter.*` and
  `id_adapter_attn_layers.*` keys, or the two as sub-dicts) -> `PuLIDAdapter`, every key and shape
  checked (the error names the file and the first bad key), built on the meta device.
- `load_eva_clip`: `EVA02_CLIP_L_336_psz14_s6B.pt` (a whole EVA-CLIP: `visual.*`, `text.*`,
  `logit_scale`) -> `EVACLIPVisionModel` from its `visual.*` keys unchanged.
- `pulid_processors_installed`: the UNet's PuLID processors for one call.
- `PuLIDLoaderMixin`: `load_pulid`, `set_identity_scale`, `unload_pulid`.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Iterator, Mapping, Optional, Union

import torch

from idgen.checkpoint import PathOrStateDict, check_state_dict, describe_source, resolve_state_dict, split_prefixed
from idgen.errors import CheckpointError, IdgenError, ModelNotFoundError

from idgen.adapters.pulid.attention import PuLIDAttnProcessor
from idgen.adapters.pulid.config import EVA02_L_336, EVA_CLIP_FILE, check_version
from idgen.adapters.pulid.eva_clip import EVACLIPVisionModel, eva_state_shapes, is_rope_table
from idgen.adapters.pulid.model import PuLIDAdapter

PARTS = ("id_adapter", "id_adapter_attn_layers")
EVA_CLIP_HINT = (
    f"PuLID needs the EVA-CLIP vision tower: download {EVA_CLIP_FILE} (Hugging Face QuanSun/EVA-CLIP, "
    "about 856 MB) and pass its path as `load_pulid(..., eva_clip=path)`."
)


def detect_version(state_dict: Mapping[str, object], what: str) -> str:
    """"v1" (an `IDEncoder`: `id_adapter.body.*`) or "v1.1" (an `IDFormer`: `id_adapter.latents`).

    Raises:
        CheckpointError: neither (not a PuLID checkpoint).
    """
    if "body.0.weight" in state_dict:
        return "v1"
    if "latents" in state_dict:
        return "v1.1"
    raise CheckpointError(
        f"{what}: no 'id_adapter.body.0.weight' (v1) or 'id_adapter.latents' (v1.1); this is not a PuLID "
        "checkpoint (pulid_v1.bin / pulid_v1.1.safetensors)."
    )


def load_pulid_adapter(source: PathOrStateDict, unet, version: str = "auto", encoder: Optional[dict] = None,
                       ) -> PuLIDAdapter:
    """The `PuLIDAdapter` of an official PuLID file (or state dict) for `unet`, on CPU in the
    file's precision cast to float32.

    Args:
        source: path (`.bin` read with weights_only, `.safetensors`) or state dict.
        version: "auto" (from the keys), "v1" or "v1.1".
        encoder: encoder sizes when they are not the official ones (`TINY_ID_ENCODER_V1`...).

    Raises:
        ModelNotFoundError: the file does not exist.
        CheckpointError: unreadable, or a key missing / misshaped / unexpected (named).
    """
    what = f"PuLID checkpoint {describe_source(source)}"
    parts = split_prefixed(resolve_state_dict(source), PARTS, what=what)
    found = detect_version(parts["id_adapter"], what)
    if version != "auto" and check_version(version) != found:
        raise CheckpointError(f"{what} is a PuLID {found} checkpoint, but version={version!r} was asked for.")
    with torch.device("meta"):
        adapter = PuLIDAdapter.for_unet(unet, found, encoder)
    flat = {f"{p}.{k}": v for p in PARTS for k, v in parts[p].items()}
    expected = {k: tuple(v.shape) for k, v in adapter.state_dict().items()}
    check_state_dict(flat, expected, what=what)
    meta = next(iter(flat.values())).is_meta
    adapter.load_state_dict({k: v if meta else v.float() for k, v in flat.items()}, assign=True)
    return adapter.eval()


def eva_visual_state_dict(state_dict: Mapping[str, object], what: str) -> dict:
    """The tower's keys of an EVA-CLIP checkpoint: `visual.*` without the prefix (a whole CLIP, as
    the official file) or the keys as they are (a tower alone); a `state_dict` / `module` / `model`
    wrapper and a `module.` prefix are removed, the stored RoPE tables dropped (as the official loader does)."""
    for wrapper in ("state_dict", "module", "model"):
        if isinstance(state_dict.get(wrapper), Mapping):
            state_dict = state_dict[wrapper]
            break
    if state_dict and all(isinstance(k, str) and k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    if any(isinstance(k, str) and k.startswith("visual.") for k in state_dict):
        state_dict = split_prefixed(state_dict, ("visual",), what=what)["visual"]
    return {k: v for k, v in state_dict.items() if not is_rope_table(k)}


def load_eva_clip(source: Union[PathOrStateDict, EVACLIPVisionModel, None], config: Optional[dict] = None,
                  ) -> EVACLIPVisionModel:
    """`EVACLIPVisionModel` from `EVA02_CLIP_L_336_psz14_s6B.pt` (or a state dict; a model passes
    through), float32 on CPU. `config`: the tower's sizes (default EVA02-CLIP-L-14-336).

    Raises:
        ModelNotFoundError: `source` is None or a missing file (the message says what to download).
        CheckpointError: a key of the tower missing / misshaped / unexpected (named).
    """
    if isinstance(source, EVACLIPVisionModel):
        return source
    if source is None:
        raise ModelNotFoundError(f"no EVA-CLIP vision tower was given. {EVA_CLIP_HINT}")
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise ModelNotFoundError(f"EVA-CLIP checkpoint {str(source)!r} does not exist. {EVA_CLIP_HINT}")
    what = f"EVA-CLIP checkpoint {describe_source(source)}"
    state_dict = eva_visual_state_dict(resolve_state_dict(source), what)
    config = dict(config or EVA02_L_336)
    check_state_dict(state_dict, eva_state_shapes(config), what=what)
    with torch.device("meta"):
        model = EVACLIPVisionModel(**config)
    meta = next(iter(state_dict.values())).is_meta
    model.load_state_dict({k: v if meta else v.float() for k, v in state_dict.items()}, assign=True, strict=False)
    if not meta:  # the RoPE tables are non-persistent buffers: recompute them off the meta device
        fresh = EVACLIPVisionModel.rope_buffers(config)
        model.rope_cos, model.rope_sin = fresh
    return model.eval()


def pulid_attn_processors(unet, adapter: PuLIDAdapter) -> dict[str, object]:
    """The UNet's processors with every ID layer replaced by a `PuLIDAttnProcessor`."""
    processors = dict(unet.attn_processors)
    for k, name in adapter.layer_names.items():
        if name not in processors:
            raise IdgenError(f"the PuLID adapter was made for another UNet: it has no attention processor {name!r}.")
        processors[name] = PuLIDAttnProcessor(k)
    return processors


@contextlib.contextmanager
def pulid_processors_installed(unet, adapter: PuLIDAdapter) -> Iterator[None]:
    """PuLID's processors in `unet` for the block; its own processors are put back afterwards."""
    previous = dict(unet.attn_processors)
    unet.set_attn_processor(pulid_attn_processors(unet, adapter))
    try:
        yield
    finally:
        unet.set_attn_processor(previous)


def check_identity_scale(scale, what: str = "identity_scale") -> float:
    """A finite float >= 0 (the official `id_scale`, a slider 0..5)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise IdgenError(f"`{what}` must be a finite number >= 0 (official slider 0..5), got {scale!r}.")
    return float(scale)


def _like_unet(module, unet):
    """`module` on the UNet's device and dtype (moved only when it is elsewhere)."""
    if module.device != unet.device or module.dtype != unet.dtype:
        module = module.to(device=unet.device, dtype=unet.dtype)
    return module


class PuLIDLoaderMixin:
    """`load_pulid`, `set_identity_scale` and `unload_pulid` for a pipeline with `unet`, and the
    registered components `pulid_adapter` and `eva_clip`."""

    def load_pulid(self, pretrained: PathOrStateDict, eva_clip: Union[PathOrStateDict, EVACLIPVisionModel, None] = None,
                   version: str = "auto", encoder: Optional[dict] = None) -> None:
        """Load `pulid_v1.bin` / `pulid_v1.1.safetensors` (path or state dict) and the EVA-CLIP tower.

        Args:
            pretrained: the PuLID file or its state dict.
            eva_clip: `EVA02_CLIP_L_336_psz14_s6B.pt` (path or state dict) or an `EVACLIPVisionModel`;
                None keeps the pipeline's tower (raises ModelNotFoundError when it has none).
            version: "auto", "v1" or "v1.1"; encoder: non-official encoder sizes (tests).

        The components are moved to the UNet's device and dtype.
        """
        adapter = load_pulid_adapter(pretrained, self.unet, version, encoder)
        tower = load_eva_clip(eva_clip) if eva_clip is not None else getattr(self, "eva_clip", None)
        if tower is None:
            raise ModelNotFoundError(f"no EVA-CLIP vision tower is loaded. {EVA_CLIP_HINT}")
        self.register_modules(pulid_adapter=_like_unet(adapter, self.unet), eva_clip=_like_unet(tower, self.unet))

    @property
    def default_identity_scale(self) -> float:
        """The ID scale of a call that gives none (`set_identity_scale`, kept in the config)."""
        return self.config.identity_scale

    def set_identity_scale(self, scale: float) -> None:
        """The default ID scale of later calls (official `id_scale`; saved with the pipeline)."""
        self.register_to_config(identity_scale=check_identity_scale(scale))

    def unload_pulid(self) -> None:
        """Remove the PuLID adapter and the EVA-CLIP tower (the UNet's processors are never changed
        outside a call)."""
        self.register_modules(pulid_adapter=None, eva_clip=None)
