"""Loading IP-Adapter-FaceID into a diffusers UNet, through diffusers' own IP-Adapter modules.

An official file becomes, all of it inside the UNet:

- `unet.encoder_hid_proj`: a `FaceIDState`, diffusers' `MultiIPAdapterImageProjection` holding the
  `IPAdapterFaceIDImageProjection` (or `IPAdapterFaceIDPlusImageProjection`) as `load_ip_adapter`
  builds it, plus what FaceID needs at call time and to unload (its spec, the Plus settings, the
  processors it replaced);
- `IPAdapterAttnProcessor2_0` on every cross-attention (the native processor: `set_ip_adapter_scale`,
  `ip_adapter_masks` work unchanged);
- the built-in rank-128 LoRA as the peft adapter named `"faceid"` (`FACEID_ADAPTER_NAME`), so it can
  be scaled, listed and unloaded like any LoRA, and user LoRAs load next to it.

Since the state lives in the UNet, as diffusers' own IP-Adapter state does, every pipeline that
shares the UNet (built from `pipe.components`, with `from_pipe`, with another VAE) sees the adapter;
`get_faceid_state(unet)` is the one place that looks for it.

Where this differs from `pipe.load_ip_adapter(...)` on the same file, and why:
- the file is checked key by key against the UNet first (`CheckpointError` names the first bad key;
  diffusers fails with a bare `KeyError` or loads a Plus file as something else);
- keys go through one explicit map (`layout.py`) instead of chained string replaces;
- the LoRA stays active next to user LoRAs: diffusers calls `set_adapters(["faceid_0"])`, which
  switches every other adapter off, and a later `load_lora_weights` switches FaceID's off;
- `unload_faceid` also removes the LoRA and restores the previous processors, so the UNet is
  exactly the base again (`unload_ip_adapter` leaves the LoRA in and resets processors to defaults).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Optional, Union

import torch
from accelerate import init_empty_weights
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import MultiIPAdapterImageProjection
from peft.tuners.tuners_utils import BaseTunerLayer

from safetensors.torch import save_file
from transformers import CLIPImageProcessor

from idgen.checkpoint import PathOrStateDict, resolve_state_dict
from idgen.deprecation import take_renamed
from idgen.errors import CheckpointError, IdgenError

from idgen.adapters.faceid.config import FaceIDSpec
from idgen.adapters.faceid.layout import convert_faceid_checkpoint, extract_faceid_state_dict, processor_names
from idgen.adapters.faceid.model import build_image_projection
from idgen.adapters.style.loader import StyleAdapterLoaderMixin, set_ip_scale

logger = logging.getLogger(__name__)

FACEID_ADAPTER_NAME = "faceid"
#: Subfolder of a saved pipeline holding the adapter (official layout) and its settings.
FACEID_SUBFOLDER = "faceid"
FACEID_WEIGHTS_NAME = "ip-adapter-faceid.safetensors"
FACEID_CONFIG_NAME = "faceid_config.json"

ScaleConfig = Union[float, dict]


class FaceIDState(MultiIPAdapterImageProjection):
    """`unet.encoder_hid_proj` while IP-Adapter-FaceID is loaded.

    diffusers' multi-adapter projection with FaceID's one projection (so the UNet's IP-Adapter path
    runs unchanged), carrying what `load_faceid` installed and what `unload_faceid` must put back.

    Attributes:
        spec: the loaded checkpoint's `FaceIDSpec`.
        previous_processors: the UNet's attention processors before loading (a plain dict, not
            submodules: they belong to the UNet's layout, not to the adapter).
        previous_encoder_hid_dim_type: the UNet config value before loading.
        identity_scale: the configured identity scale (float or per-block dict, `set_faceid_scale`).
        s_scale / shortcut: Plus only: default CLIP-branch weight and shortcut of a call.
    """

    def __init__(self, projection: torch.nn.Module, spec: FaceIDSpec, previous_processors: dict,
                 previous_encoder_hid_dim_type: Optional[str]):
        super().__init__([projection])
        self.spec = spec
        self.previous_processors = previous_processors
        self.previous_encoder_hid_dim_type = previous_encoder_hid_dim_type
        self.identity_scale: ScaleConfig = 1.0
        self.s_scale = 1.0
        self.shortcut = spec.shortcut

    @property
    def projection(self) -> torch.nn.Module:
        """The diffusers FaceID projection: embeddings `[B, 512]` -> tokens `[B, num_tokens, D]`."""
        return self.image_projection_layers[0]


def get_faceid_state(unet) -> Optional[FaceIDState]:
    """The FaceID loaded into `unet`, or None."""
    projection = getattr(unet, "encoder_hid_proj", None)
    return projection if isinstance(projection, FaceIDState) else None


def install_faceid(unet, weights) -> FaceIDState:
    """Put the projection and IP processors of `weights` (a `FaceIDWeights`) into `unet`.

    Modules are built empty and take the checkpoint tensors with `assign=True`, so this also works on
    a UNet on the meta device (layout checks at full size without memory). The LoRA is not handled
    here (see `load_faceid_into_unet`).
    """
    if unet.encoder_hid_proj is not None:
        raise IdgenError(
            "this UNet already has an encoder_hid_proj (another IP-Adapter is loaded, or the model "
            "projects text itself); call `pipe.unload_ip_adapter()` / `unload_faceid()` first."
        )
    device = unet.device
    dtype = unet.dtype

    def cast(sd):
        return {k: v.to(device=device, dtype=dtype) for k, v in sd.items()}

    with init_empty_weights():
        projection = build_image_projection(weights.spec)
    projection.load_state_dict(cast(weights.image_proj), strict=True, assign=True)
    projection.eval()

    previous = unet.attn_processors
    processors = {}
    for name in processor_names(unet):
        if name in weights.processors:
            attn = unet.get_submodule(name[: -len(".processor")])
            with init_empty_weights():
                proc = IPAdapterAttnProcessor2_0(
                    hidden_size=attn.to_k.out_features,
                    cross_attention_dim=attn.to_k.in_features,
                    num_tokens=(weights.spec.num_tokens,),
                    scale=1.0,
                )
            proc.load_state_dict(cast(weights.processors[name]), strict=True, assign=True)
            processors[name] = proc
        else:
            processors[name] = previous[name]
    state = FaceIDState(projection, weights.spec, previous, unet.config.encoder_hid_dim_type)
    unet.set_attn_processor(processors)
    unet.encoder_hid_proj = state
    # diffusers flips this flag the same way in `_load_ip_adapter_weights` (attribute on the config).
    unet.config.encoder_hid_dim_type = "ip_image_proj"
    return state


def uninstall_faceid(unet) -> None:
    """Undo `install_faceid`: previous processors back, no `encoder_hid_proj`."""
    state = get_faceid_state(unet)
    # projection first: the Plus resampler's own attentions are listed in `unet.attn_processors`
    unet.encoder_hid_proj = None
    unet.config.encoder_hid_dim_type = state.previous_encoder_hid_dim_type
    unet.set_attn_processor(state.previous_processors)


def _lora_layers(unet) -> list[BaseTunerLayer]:
    return [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]


def unet_adapters(unet) -> list[str]:
    """Names of the LoRA adapters loaded into `unet`."""
    return list(getattr(unet, "peft_config", None) or {})


def active_unet_adapters(unet) -> list[str]:
    for layer in _lora_layers(unet):
        return list(layer.active_adapters)
    return []


def activate_unet_adapters(unet, names: list[str]) -> None:
    """Make `names` the active adapters of every LoRA layer, leaving their weights as they are."""
    names = list(dict.fromkeys(names))
    for layer in _lora_layers(unet):
        layer.set_adapter(names)


def faceid_lora_scale(unet) -> float:
    """The weight of the `"faceid"` LoRA (peft's scaling divided by alpha/r, which the file fixes)."""
    for layer in _lora_layers(unet):
        if FACEID_ADAPTER_NAME in layer.scaling:
            return float(layer.scaling[FACEID_ADAPTER_NAME] * layer.r[FACEID_ADAPTER_NAME]
                         / layer.lora_alpha[FACEID_ADAPTER_NAME])
    raise IdgenError("this UNet has no FaceID LoRA.")


def set_faceid_lora_scale(unet, scale: float) -> None:
    for layer in _lora_layers(unet):
        if FACEID_ADAPTER_NAME in layer.scaling:
            layer.set_scale(FACEID_ADAPTER_NAME, float(scale))


def load_faceid_into_unet(
    unet,
    state_dict,
    variant: str = "auto",
    *,
    clip_dim: Optional[int] = None,
    _pipeline=None,
) -> FaceIDState:
    """Check, convert and install an official FaceID state dict into `unet`, LoRA included.

    Works on a UNet on the meta device (meta tensors in, nothing allocated): that is how the test
    suite checks the official layouts at full size. The `"faceid"` LoRA is left active together with
    the adapters that were active before.
    """
    weights = convert_faceid_checkpoint(state_dict, unet, variant, clip_dim=clip_dim)
    before = active_unet_adapters(unet)
    state = install_faceid(unet, weights)
    if not weights.spec.has_lora:  # FaceID-Portrait
        return state
    device, dtype = unet.device, unet.dtype  # each lookup walks the whole model: once only
    lora = {k: v.to(device=device, dtype=dtype) for k, v in weights.lora.items()}
    try:
        # `_pipeline` lets diffusers lift offload hooks while it injects layers (as load_lora_weights does).
        unet.load_lora_adapter(
            lora,
            prefix=None,
            adapter_name=FACEID_ADAPTER_NAME,
            _pipeline=_pipeline,
            low_cpu_mem_usage=device.type == "meta",
        )
    except Exception:
        uninstall_faceid(unet)
        raise
    activate_unet_adapters(unet, before + [FACEID_ADAPTER_NAME])
    return state


def unload_faceid_from_unet(unet) -> None:
    """Remove FaceID from `unet`: projection, processors and the `"faceid"` LoRA (the peft wrappers
    too when no other LoRA is loaded), so the UNet is exactly as before `load_faceid_into_unet`."""
    if not get_faceid_state(unet).spec.has_lora:
        uninstall_faceid(unet)
        return
    uninstall_faceid(unet)
    remaining = [a for a in unet_adapters(unet) if a != FACEID_ADAPTER_NAME]
    active = [a for a in active_unet_adapters(unet) if a != FACEID_ADAPTER_NAME]
    if remaining:
        unet.delete_adapters(FACEID_ADAPTER_NAME)
        if active:
            activate_unet_adapters(unet, active)
    else:
        unet.unload_lora()  # removes the peft wrappers themselves


class FaceIDLoaderMixin(StyleAdapterLoaderMixin):
    """IP-Adapter-FaceID loading for SD1.5 / SDXL pipelines (see the module docstring). Every method
    reads the adapter from `self.unet`, so it acts on whatever any pipeline sharing the UNet loaded.
    A style adapter (`load_style_adapter`) sits next to FaceID as the UNet's second IP-Adapter; FaceID
    is always the first (loading / unloading FaceID sets the style aside and puts it back after)."""

    # ------------------------------------------------------------------ loading

    def load_faceid(
        self,
        path_or_state_dict: PathOrStateDict,
        variant: str = "auto",
        *,
        image_encoder=None,
        identity_scale: ScaleConfig = 1.0,
        lora_scale: float = 1.0,
        s_scale: float = 1.0,
        shortcut: Optional[bool] = None,
        **kwargs,
    ) -> None:
        """Load an official IP-Adapter-FaceID file (or its state dict) into this pipeline's UNet,
        replacing the FaceID loaded there before (by this pipeline or any other sharing the UNet).

        Args:
            path_or_state_dict: `ip-adapter-faceid_sd15.bin`, `ip-adapter-faceid-plusv2_sd15.bin`,
                `ip-adapter-faceid_sdxl.bin`, ... (`.bin` read with `weights_only=True`, or
                `.safetensors` with `image_proj.*` / `ip_adapter.*` keys), or the dict itself.
            variant: "faceid", "faceid-plusv2", "faceid-plus" (v1: no shortcut), "faceid-portrait"
                (`ip-adapter-faceid-portrait*.bin`: no LoRA, 16 tokens per photo, several photos of one
                person concatenated) or "auto" (FaceID, Portrait for a file without LoRA, or Plus v2 for
                a Plus file). A file asked for as another variant is refused with a `CheckpointError`.
            image_encoder: Plus only: the CLIP image encoder (`CLIPVisionModelWithProjection`, ViT-H
                for the official files); registered as the pipeline's `image_encoder`. Not needed
                if the pipeline already has one or you pass `clip_image_embeds` yourself.
            identity_scale: a float or diffusers' per-block dict (see `set_faceid_scale`); old name `scale`.
            lora_scale: weight of the built-in LoRA (official: 1.0; Portrait has none).
            s_scale: Plus only: weight of the CLIP branch (official default 1.0).
            shortcut: Plus only: override the variant's shortcut (v2: True, v1: False).

        Raises:
            CheckpointError: unreadable file, wrong variant, or the first missing/mis-shaped key.
        """
        identity_scale = take_renamed(kwargs, "scale", "identity_scale", identity_scale, 1.0)
        _refuse_unknown("load_faceid", kwargs)
        with self._style_set_aside():
            self._load_faceid(path_or_state_dict, variant, image_encoder, identity_scale, lora_scale, s_scale, shortcut)

    def _load_faceid(self, path_or_state_dict, variant, image_encoder, identity_scale, lora_scale, s_scale,
                     shortcut) -> None:
        if self.faceid_loaded:
            self.unload_faceid()
        encoder = image_encoder if image_encoder is not None else getattr(self, "image_encoder", None)
        clip_dim = int(encoder.config.hidden_size) if encoder is not None else None
        state = load_faceid_into_unet(
            self.unet, resolve_state_dict(path_or_state_dict), variant, clip_dim=clip_dim, _pipeline=self
        )
        if shortcut is not None:
            state.shortcut = bool(shortcut)
        if image_encoder is not None and not state.spec.is_plus:
            logger.warning("`image_encoder` is only used by FaceID-Plus; this checkpoint is plain FaceID.")
        if state.spec.is_plus:
            if image_encoder is not None:
                self.register_modules(image_encoder=image_encoder)
            self._ensure_clip_processor()
            if getattr(self, "image_encoder", None) is None:
                logger.info(
                    "FaceID-Plus loaded without an image encoder: pass `clip_image_embeds` (and "
                    "`negative_clip_image_embeds`) when calling, or load with `image_encoder=`."
                )
        self.set_faceid_scale(identity_scale, lora_scale=lora_scale, s_scale=s_scale)

    def _ensure_clip_processor(self) -> None:
        encoder = getattr(self, "image_encoder", None)
        if getattr(self, "feature_extractor", None) is None:
            # The official code uses CLIPImageProcessor() (224); match the encoder's input size.
            size = int(encoder.config.image_size) if encoder is not None else 224
            self.register_modules(
                feature_extractor=CLIPImageProcessor(
                    size={"shortest_edge": size}, crop_size={"height": size, "width": size}
                )
            )

    # ------------------------------------------------------------------ state

    @property
    def faceid_loaded(self) -> bool:
        return get_faceid_state(self.unet) is not None

    @property
    def faceid_spec(self) -> Optional[FaceIDSpec]:
        state = get_faceid_state(self.unet)
        return None if state is None else state.spec

    def _require_faceid(self) -> FaceIDState:
        state = get_faceid_state(self.unet)
        if state is None:
            raise IdgenError("no IP-Adapter-FaceID is loaded: call `pipe.load_faceid(path)` first.")
        return state

    @property
    def default_identity_scale(self) -> ScaleConfig:
        """The identity scale of a call that gives none (`set_faceid_scale`; 1.0 after loading)."""
        return self._require_faceid().identity_scale

    def _faceid_processors(self) -> dict:
        return {n: p for n, p in self.unet.attn_processors.items() if isinstance(p, IPAdapterAttnProcessor2_0)}

    def get_faceid_scales(self) -> dict[str, object]:
        """Identity scale of each cross-attention processor, by processor name."""
        return {n: p.scale[0] for n, p in self._faceid_processors().items()}

    def _set_faceid_scales(self, scales: dict[str, object]) -> None:
        for name, proc in self._faceid_processors().items():
            proc.scale[0] = scales[name]

    def set_faceid_scale(
        self,
        identity_scale: Optional[ScaleConfig] = None,
        *,
        lora_scale: Optional[float] = None,
        s_scale: Optional[float] = None,
        **kwargs,
    ) -> None:
        """Set the identity scale, the built-in LoRA's weight, and (Plus) the CLIP-branch weight.

        Args:
            identity_scale: a float for every cross-attention, or diffusers' per-block dict (blocks
                not named get 0), e.g. `{"down": {"block_2": [0.0, 1.0]}, "up": {"block_0": [0.0, 1.0, 0.0]}}`;
                old name `scale`.
            lora_scale: weight of the `"faceid"` LoRA (0 switches it off without unloading).
            s_scale: Plus only, the shortcut weight of the CLIP branch.
        """
        identity_scale = take_renamed(kwargs, "scale", "identity_scale", identity_scale)
        _refuse_unknown("set_faceid_scale", kwargs)
        state = self._require_faceid()
        if identity_scale is not None:
            if isinstance(identity_scale, list):
                raise IdgenError("FaceID is one adapter: give `identity_scale` as a float or a per-block dict.")
            set_ip_scale(self.unet, 0, identity_scale)  # FaceID is the first IP-Adapter (a style may follow)
            state.identity_scale = identity_scale
        if lora_scale is not None:
            set_faceid_lora_scale(self.unet, lora_scale)
        if s_scale is not None:
            state.s_scale = float(s_scale)

    set_identity_scale = set_faceid_scale  # the name every idgen identity pipeline has

    def faceid_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """The loaded adapter in the official layout (`{"image_proj": ..., "ip_adapter": ...}`)."""
        state = self._require_faceid()
        return extract_faceid_state_dict(self.unet, state.spec, state.projection, FACEID_ADAPTER_NAME)

    # ------------------------------------------------------------------ unloading

    def unload_faceid(self) -> None:
        """Remove the adapter from the UNet: projection, processors and the `"faceid"` LoRA.

        The UNet is exactly as before `load_faceid` (previous processors, no peft layers left when no
        other LoRA is loaded). A registered `image_encoder` stays (it is a pipeline component).
        """
        self._require_faceid()
        with self._style_set_aside():
            unload_faceid_from_unet(self.unet)

    # ------------------------------------------------------------------ diffusers' methods
    # What diffusers lacks for an adapter with its own LoRA and IP processors, hence these wrappers:
    # peft activates only the adapters named last (`load_lora_weights`, `set_adapters`) and
    # `unload_lora_weights` removes them all, so FaceID's LoRA is kept; attention slicing would drop
    # its IP processors; `load_ip_adapter` / `unload_ip_adapter` share the UNet's one IP-Adapter
    # slot; `save_pretrained` / `from_pretrained` keep the adapter (see `save_pretrained`).

    def load_ip_adapter(self, *args, **kwargs):
        """diffusers' `load_ip_adapter`, refused while FaceID (or a style adapter) is loaded."""
        if self.faceid_loaded:
            raise IdgenError("IP-Adapter-FaceID is loaded: call `unload_faceid()` before `load_ip_adapter()`.")
        return super().load_ip_adapter(*args, **kwargs)

    def unload_ip_adapter(self):
        """With FaceID loaded, same as `unload_faceid()`; otherwise diffusers' behaviour."""
        if self.faceid_loaded:
            return self.unload_faceid()
        return super().unload_ip_adapter()

    def set_attention_slice(self, slice_size):
        """diffusers' attention slicing (`enable_attention_slicing` / `disable_attention_slicing`),
        which gives every attention a plain (sliced or default) processor: FaceID's IP processors,
        and with them its identity K/V weights, are kept (unsliced) instead of being dropped."""
        kept = self._faceid_processors()
        super().set_attention_slice(slice_size)
        if kept:
            self.unet.set_attn_processor({**self.unet.attn_processors, **kept})

    def load_lora_weights(self, *args, **kwargs):
        """diffusers' `load_lora_weights`; the FaceID LoRA stays active next to the new adapter."""
        out = super().load_lora_weights(*args, **kwargs)
        if self.faceid_loaded and self.faceid_spec.has_lora:
            activate_unet_adapters(self.unet, active_unet_adapters(self.unet) + [FACEID_ADAPTER_NAME])
        return out

    def unload_lora_weights(self, *args, **kwargs):
        """diffusers' `unload_lora_weights` for the user's LoRAs; FaceID's stays (`unload_faceid`
        removes it)."""
        if not self.faceid_loaded or not self.faceid_spec.has_lora:
            return super().unload_lora_weights(*args, **kwargs)
        with self._faceid_set_aside():
            return super().unload_lora_weights(*args, **kwargs)

    def set_adapters(self, adapter_names, adapter_weights=None):
        """diffusers' `set_adapters`; the FaceID LoRA is kept active (at its weight) unless named, so
        tuning a user LoRA never silently drops FaceID's."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        if not self.faceid_loaded or not self.faceid_spec.has_lora or FACEID_ADAPTER_NAME in names:
            return super().set_adapters(adapter_names, adapter_weights)
        weights = adapter_weights if isinstance(adapter_weights, list) else [adapter_weights] * len(names)
        weights = [1.0 if w is None else w for w in weights] + [faceid_lora_scale(self.unet)]
        return super().set_adapters(names + [FACEID_ADAPTER_NAME], weights)

    def save_pretrained(self, save_directory: Union[str, os.PathLike], *args, **kwargs):
        """diffusers' `save_pretrained`, with the adapter kept: a UNet saved with peft layers and IP
        processors inside does not reload, so the UNet is saved as it was before `load_faceid` and
        the adapter goes to `faceid/` in the official layout (`ip-adapter-faceid.safetensors`,
        loadable by the official code too) with its settings; `from_pretrained` loads it back."""
        if not self.faceid_loaded:
            return super().save_pretrained(save_directory, *args, **kwargs)
        with self._faceid_set_aside() as (official, settings):
            super().save_pretrained(save_directory, *args, **kwargs)
            folder = Path(save_directory) / FACEID_SUBFOLDER
            folder.mkdir(parents=True, exist_ok=True)

            flat = {f"{part}.{k}": v.contiguous() for part, sd in official.items() for k, v in sd.items()}
            save_file(flat, str(folder / FACEID_WEIGHTS_NAME), metadata={"format": "pt"})
            (folder / FACEID_CONFIG_NAME).write_text(json.dumps(settings, indent=1))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' `from_pretrained`; a local folder saved with FaceID loaded gets it back."""
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        folder = Path(pretrained_model_name_or_path) / FACEID_SUBFOLDER
        if (folder / FACEID_WEIGHTS_NAME).is_file():
            settings = json.loads((folder / FACEID_CONFIG_NAME).read_text())
            pipe._restore_faceid(str(folder / FACEID_WEIGHTS_NAME), settings)
        return pipe

    @contextlib.contextmanager
    def _faceid_set_aside(self):
        """Unload FaceID for the body of the `with` and load it back afterwards, same weights and
        settings; yields `(official state dict (CPU copies), settings)`."""
        state = self._require_faceid()
        official = {
            part: {k: v.detach().to("cpu").clone() for k, v in sd.items()}
            for part, sd in self.faceid_state_dict().items()
        }
        settings = {
            "variant": state.spec.variant,
            "spec": state.spec.to_dict(),
            "identity_scale": state.identity_scale,
            "scales": self.get_faceid_scales(),
            "lora_scale": faceid_lora_scale(self.unet) if state.spec.has_lora else 1.0,
            "s_scale": state.s_scale,
            "shortcut": state.shortcut,
        }
        self.unload_faceid()
        try:
            yield official, settings
        finally:
            self._restore_faceid(official, settings)

    def _restore_faceid(self, source: PathOrStateDict, settings: dict) -> None:
        self.load_faceid(
            source,
            variant=settings["variant"],
            identity_scale=settings.get("identity_scale", 1.0),  # absent in folders saved before it was kept
            lora_scale=settings["lora_scale"],
            s_scale=settings["s_scale"],
            shortcut=settings["shortcut"],
        )
        scales = settings["scales"]
        if set(scales) != set(self.get_faceid_scales()):
            raise CheckpointError("saved FaceID scales do not match this UNet's cross-attention processors.")
        self._set_faceid_scales(scales)


def _refuse_unknown(method: str, kwargs: dict) -> None:
    """What Python does for a signature without `**kwargs`, which these keep for the old names."""
    if kwargs:
        raise TypeError(f"{method}() got unexpected keyword argument(s) {sorted(kwargs)}")
