"""A style reference (InstantStyle) next to the identity adapter, on diffusers' multi-IP-Adapter.

A standard IP-Adapter file is converted by diffusers' own code (`_convert_ip_adapter_image_proj_to_diffusers`,
`_convert_ip_adapter_attn_to_diffusers`) and installed as ONE MORE adapter of the UNet's IP-Adapter
path: its projection is appended to `unet.encoder_hid_proj` (a `MultiIPAdapterImageProjection`,
FaceID's `FaceIDState` when FaceID is loaded) and its `to_k_ip` / `to_v_ip` to each
cross-attention's `IPAdapterAttnProcessor2_0` (a new one where the attention had none). Each adapter
keeps its own scale: the identity acts in every block, the style only in the InstantStyle blocks
(`idgen.style.style_block_scales`). diffusers then hands the processors
`encoder_hidden_states = (text, [tokens per adapter])`; InstantID's processors take the style part
from the IP processor they replace for a call (`idgen.adapters.instantid.loader`).

The record of what was installed (`StyleAdapter`) lives on the UNet, like every other IP-Adapter
state, so pipelines sharing the UNet see it.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Optional, Union

import torch
from diffusers.loaders.unet_loader_utils import _maybe_expand_lora_scales
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import MultiIPAdapterImageProjection
from transformers import CLIPImageProcessor

from idgen.checkpoint import PathOrStateDict, resolve_state_dict
from idgen.errors import CheckpointError, IdgenError, ModelNotFoundError
from idgen.style import STYLE_BLOCKS, style_block_scales

from idgen.adapters.style.layout import StyleSpec, check_style_file, split_style_file

logger = logging.getLogger(__name__)

_ATTR = "_idgen_style_adapter"
ScaleConfig = Union[float, dict]
#: Where the CLIP image encoders of the official files live (h94/IP-Adapter).
ENCODER_HINT = ("`models/image_encoder` (CLIP ViT-H/14: ip-adapter_sd15.bin, the *_vit-h and Plus files) or "
                "`sdxl_models/image_encoder` (OpenCLIP ViT-bigG/14: ip-adapter_sdxl.bin) of h94/IP-Adapter")


@dataclass
class StyleAdapter:
    """A converted style IP-Adapter and where it sits in a UNet.

    Attributes:
        spec: the file's `StyleSpec`.
        projection: diffusers' image projection (`ImageProjection`, `IPAdapterPlusImageProjection`,
            `IPAdapterFullImageProjection`): CLIP features -> `[num_tokens, D]` per image.
        to_k / to_v: processor name -> `Linear(D, hidden)` of each cross-attention.
        scale / blocks: the configured strength and block selection (`set_style_scale`).
        index: position among the UNet's IP adapters while installed (1 next to FaceID, else 0).
        created: processor names where the style installed a new IP processor, with the one it replaced.
        previous_hid_dim_type: `unet.config.encoder_hid_dim_type` when the style created `encoder_hid_proj`.
    """

    spec: StyleSpec
    projection: torch.nn.Module
    to_k: dict
    to_v: dict
    scale: float = 1.0
    blocks: Union[str, dict] = "style"
    index: int = 0
    created: dict = field(default_factory=dict)
    created_hid_proj: bool = False
    previous_hid_dim_type: Optional[str] = None


def get_style_adapter(unet) -> Optional[StyleAdapter]:
    """The style adapter installed in `unet`, or None."""
    return unet.__dict__.get(_ATTR)


def convert_style_checkpoint(state_dict, unet) -> StyleAdapter:
    """Check a standard IP-Adapter state dict against `unet` and convert it with diffusers' code.

    Raises:
        CheckpointError: an identity-adapter file, or the first missing / mis-shaped key.
    """
    parts = split_style_file(state_dict)
    spec = check_style_file(parts, unet)
    try:
        # strict load: names a Plus / full-face key that does not fit
        projection = unet._convert_ip_adapter_image_proj_to_diffusers(parts["image_proj"], low_cpu_mem_usage=False)
    except (KeyError, RuntimeError, ValueError, IndexError) as e:
        # torch's message: a title line, then the missing keys / size mismatches (the first named here)
        detail = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))[:400]
        raise CheckpointError(f"style IP-Adapter ({spec.kind}) image_proj does not fit diffusers' projection "
                              f"(the official Plus resampler: depth 4, 64-wide heads, ff_mult 4): {detail}") from None
    hid_proj = unet.encoder_hid_proj
    unet.encoder_hid_proj = None  # as diffusers: its own attention processors (Plus resamplers) are not UNet layers
    try:
        processors = unet._convert_ip_adapter_attn_to_diffusers([parts])
    finally:
        unet.encoder_hid_proj = hid_proj
    device, dtype = unet.device, unet.dtype
    ip = {n: p for n, p in processors.items() if isinstance(p, IPAdapterAttnProcessor2_0)}
    return StyleAdapter(
        spec, projection.to(device=device, dtype=dtype).eval(),
        to_k={n: p.to_k_ip[0].to(device=device, dtype=dtype) for n, p in ip.items()},
        to_v={n: p.to_v_ip[0].to(device=device, dtype=dtype) for n, p in ip.items()},
    )


def install_style(unet, adapter: StyleAdapter) -> None:
    """Append `adapter` to the UNet's IP-Adapter path (projection and per-attention K/V), at scale 0;
    `set_ip_scale` then gives it its scale."""
    if get_style_adapter(unet) is not None:
        raise IdgenError("a style adapter is already installed in this UNet; unload it first.")
    hid_proj = unet.encoder_hid_proj
    if hid_proj is None:
        unet.encoder_hid_proj = MultiIPAdapterImageProjection([adapter.projection])
        adapter.created_hid_proj, adapter.previous_hid_dim_type = True, unet.config.encoder_hid_dim_type
        unet.config.encoder_hid_dim_type = "ip_image_proj"  # as diffusers' `_load_ip_adapter_weights`
    elif isinstance(hid_proj, MultiIPAdapterImageProjection):
        hid_proj.image_projection_layers.append(adapter.projection)
    else:
        raise IdgenError("this UNet projects its text with `encoder_hid_proj` (not an IP-Adapter): no style adapter.")
    adapter.index = len(unet.encoder_hid_proj.image_projection_layers) - 1
    current = unet.attn_processors
    processors = dict(current)
    adapter.created = {}
    for name in adapter.to_k:
        proc = current[name]
        if not isinstance(proc, IPAdapterAttnProcessor2_0):
            adapter.created[name] = proc
            proc = IPAdapterAttnProcessor2_0(adapter.to_k[name].out_features, adapter.to_k[name].in_features,
                                             num_tokens=[], scale=[])
            processors[name] = proc
        if len(proc.scale) != adapter.index:
            raise IdgenError(f"attention {name!r} has {len(proc.scale)} IP-Adapters, the UNet's projection "
                             f"{adapter.index}: the UNet's IP-Adapter state is inconsistent.")
        proc.to_k_ip.append(adapter.to_k[name])
        proc.to_v_ip.append(adapter.to_v[name])
        proc.num_tokens = list(proc.num_tokens) + [adapter.spec.num_tokens]
        proc.scale.append(0.0)
    if adapter.created:
        unet.set_attn_processor(processors)
    unet.__dict__[_ATTR] = adapter


def uninstall_style(unet) -> StyleAdapter:
    """Undo `install_style`; returns the adapter (its modules intact, to be installed again)."""
    adapter = get_style_adapter(unet)
    layers = unet.encoder_hid_proj.image_projection_layers
    if len(layers) != adapter.index + 1 or layers[adapter.index] is not adapter.projection:
        raise IdgenError("the style adapter is not the UNet's last IP-Adapter any more; cannot unload it.")
    current = unet.attn_processors
    for name in adapter.to_k:
        proc = current[name]
        del proc.to_k_ip[adapter.index], proc.to_v_ip[adapter.index]
        proc.num_tokens, proc.scale = list(proc.num_tokens)[:-1], proc.scale[:-1]
    if adapter.created:
        unet.set_attn_processor({**current, **adapter.created})
    if adapter.created_hid_proj:
        unet.encoder_hid_proj = None
        unet.config.encoder_hid_dim_type = adapter.previous_hid_dim_type
    else:
        del layers[adapter.index]
    del unet.__dict__[_ATTR]
    return adapter


def check_block_names(unet, config: Mapping, *, what: str) -> None:
    """Refuse parts and blocks of a block-scale dict that `unet` lacks (diffusers' expansion
    silently ignores unknown ones, so a typo would switch the adapter off)."""
    blocks = {
        part: {f"block_{i}" for i, b in enumerate(getattr(unet, f"{part}_blocks")) if getattr(b, "attentions", None)}
        for part in ("down", "up")
    }
    for part, value in config.items():
        if part not in ("down", "mid", "up"):
            raise IdgenError(f"{what}: unknown part {part!r}; use 'down', 'mid' and 'up'.")
        if part != "mid" and isinstance(value, Mapping):
            for block in value:
                if block not in blocks[part]:
                    raise IdgenError(
                        f"{what}: {part!r} has no attention block {block!r}; blocks with attention: {sorted(blocks[part])}."
                    )


def expand_ip_scale(unet, config: ScaleConfig) -> Union[float, dict]:
    """diffusers' expansion of one adapter's scale config (`set_ip_adapter_scale` format): a float,
    or `{layer prefix: scale}` for every attention block (blocks not named: 0)."""
    if not isinstance(config, dict):
        return float(config)
    check_block_names(unet, config, what="block scales")
    try:
        return _maybe_expand_lora_scales(unet, [config], default_scale=0.0)[0]
    except (ValueError, KeyError, TypeError) as e:
        raise IdgenError(f"bad block scales {config!r}: {e}") from None


def set_ip_scale(unet, index: int, config: ScaleConfig) -> None:
    """Set the scale of the `index`-th IP-Adapter of every IP processor, leaving the others' scales
    (diffusers' `set_ip_adapter_scale` sets all adapters at once and broadcasts one config to all)."""
    assign_ip_scale(unet, index, expand_ip_scale(unet, config))


def assign_ip_scale(unet, index: int, expanded: Union[float, dict]) -> None:
    """`set_ip_scale` with an already expanded config (`expand_ip_scale`)."""
    for name, proc in unet.attn_processors.items():
        if isinstance(proc, IPAdapterAttnProcessor2_0) and index < len(proc.scale):
            if isinstance(expanded, dict):
                for prefix, s in expanded.items():  # diffusers' matching rule
                    if name.startswith(prefix):
                        proc.scale[index] = s
            else:
                proc.scale[index] = expanded


def style_scale_config(unet, scale: float, blocks: Union[str, dict]) -> Union[float, dict]:
    """The style's expanded per-block scale (`expand_ip_scale`): `blocks` a `STYLE_BLOCKS` name
    (InstantStyle's blocks for SDXL / SD1.5), or a diffusers block dict of weights (1.0 where the
    style acts) multiplied by `scale`."""
    if isinstance(blocks, dict):
        return {prefix: s * float(scale) for prefix, s in expand_ip_scale(unet, blocks).items()}
    architecture = "sdxl" if unet.config.addition_embed_type == "text_time" else "sd15"
    return expand_ip_scale(unet, style_block_scales(architecture, blocks, scale, attention_blocks(unet)))


def attention_blocks(unet) -> dict:
    """The UNet's attention blocks as `style_block_scales` takes them: `{"down": {i: n}, "up": {i: n}}`,
    n the transformers (`attentions`) of block i; blocks without attention left out."""
    return {part: {i: len(block.attentions) for i, block in enumerate(getattr(unet, f"{part}_blocks"))
                   if getattr(block, "attentions", None)}
            for part in ("down", "up")}


class StyleAdapterLoaderMixin:
    """Pipeline mixin: a standard IP-Adapter as InstantStyle's style reference, next to the identity
    adapter. The style image is diffusers' `ip_adapter_image` (or `ip_adapter_image_embeds`)."""

    def load_style_adapter(self, path_or_state_dict: PathOrStateDict, image_encoder=None, feature_extractor=None,
                           *, scale: float = 1.0, blocks: Union[str, dict] = "style") -> None:
        """Load a standard IP-Adapter file as the style reference (replacing a loaded one).

        Args:
            path_or_state_dict: `ip-adapter_sdxl.bin`, `ip-adapter_sd15.bin`, the *_vit-h / Plus /
                full-face files or their `.safetensors` (`image_proj.*`, `ip_adapter.*`), or the dict.
            image_encoder: the CLIP image encoder (`CLIPVisionModelWithProjection`; ViT-bigG/14 for
                ip-adapter_sdxl.bin, ViT-H/14 for the others); registered as the pipeline's
                `image_encoder`. Needed unless the pipeline has one.
            feature_extractor: its `CLIPImageProcessor` (default: 224 px, as diffusers').
            scale / blocks: as `set_style_scale`.

        Raises:
            CheckpointError: an identity-adapter file, or the first missing / mis-shaped key.
            ModelNotFoundError: no image encoder.
            IdgenError: the encoder does not fit the file (or FaceID-Plus needs another one).
        """
        state_dict = resolve_state_dict(path_or_state_dict)
        adapter = convert_style_checkpoint(state_dict, self.unet)
        self._attach_style_encoder(adapter.spec, image_encoder, feature_extractor)
        if self.style_adapter_loaded:
            uninstall_style(self.unet)
        install_style(self.unet, adapter)
        self.set_style_scale(scale, blocks)

    def _attach_style_encoder(self, spec: StyleSpec, image_encoder, feature_extractor) -> None:
        current = getattr(self, "image_encoder", None)
        encoder = image_encoder if image_encoder is not None else current
        if encoder is None:
            raise ModelNotFoundError(
                f"the style IP-Adapter ({spec.kind}) needs its CLIP image encoder: load it with "
                f"`image_encoder=CLIPVisionModelWithProjection.from_pretrained(...)` from {ENCODER_HINT}."
            )
        width = int(encoder.config.hidden_size if spec.uses_hidden_states else encoder.config.projection_dim)
        if width != spec.clip_dim:
            raise IdgenError(
                f"the style IP-Adapter takes {spec.clip_dim}-d CLIP features but this image encoder gives {width}-d "
                f"({'hidden states' if spec.uses_hidden_states else 'image embeds'}); use {ENCODER_HINT}."
            )
        if image_encoder is not None and current is not None and image_encoder is not current:
            faceid = getattr(self, "faceid_spec", None)
            if faceid is not None and faceid.is_plus:
                raise IdgenError("FaceID-Plus uses the pipeline's image_encoder: load a style adapter that fits it "
                                 "(ip-adapter-plus_sdxl_vit-h.bin / *_vit-h) without giving another encoder.")
        if image_encoder is not None:
            self.register_modules(image_encoder=image_encoder)
        if feature_extractor is not None:
            self.register_modules(feature_extractor=feature_extractor)
        elif getattr(self, "feature_extractor", None) is None:
            self.register_modules(feature_extractor=CLIPImageProcessor())  # diffusers' default, 224 px

    @property
    def style_adapter_loaded(self) -> bool:
        return get_style_adapter(self.unet) is not None

    def _require_style(self) -> StyleAdapter:
        adapter = get_style_adapter(self.unet)
        if adapter is None:
            raise IdgenError("no style adapter is loaded: call `pipe.load_style_adapter(path, image_encoder=...)` first.")
        return adapter

    def set_style_scale(self, scale: float, blocks: Union[str, dict] = "style") -> None:
        """Strength of the style reference and the blocks it acts in.

        Args:
            scale: the style strength; 0 removes the style exactly (its attention is skipped).
            blocks: "style" (InstantStyle: SDXL `up_blocks.0.attentions.1`; SD1.5 `up_blocks.1`),
                "style+layout" (adds SDXL `down_blocks.2.attentions.1`; SD1.5 `down_blocks.2` and mid),
                "all" (the original IP-Adapter), or a diffusers block dict of weights multiplied by `scale`.
        """
        adapter = self._require_style()
        if not isinstance(blocks, dict) and blocks not in STYLE_BLOCKS:
            raise IdgenError(f"style blocks must be one of {', '.join(STYLE_BLOCKS)} or a block dict, got {blocks!r}.")
        assign_ip_scale(self.unet, adapter.index, style_scale_config(self.unet, scale, blocks))
        adapter.scale, adapter.blocks = float(scale), blocks

    def unload_style_adapter(self) -> None:
        """Remove the style adapter; the UNet's IP-Adapter state is as before `load_style_adapter`
        (the registered `image_encoder` stays: it is a pipeline component)."""
        self._require_style()
        uninstall_style(self.unet)

    @contextlib.contextmanager
    def _style_set_aside(self) -> Iterator[Optional[StyleAdapter]]:
        """Take the style adapter out of the UNet for the `with` body (to load or unload the identity
        adapter, or save the UNet clean) and put it back with its scale afterwards."""
        adapter = get_style_adapter(self.unet)
        if adapter is None:
            yield None
            return
        uninstall_style(self.unet)
        try:
            yield adapter
        finally:
            install_style(self.unet, adapter)
            assign_ip_scale(self.unet, adapter.index, style_scale_config(self.unet, adapter.scale, adapter.blocks))

    def encode_style_image(self, image, device, batch_size: int, do_classifier_free_guidance: bool) -> torch.Tensor:
        """The style adapter's `ip_adapter_image_embeds` entry for a style image (or list of images):
        `[(2 if CFG) * batch_size, n_images, E]` (plain) or `[..., n_images, T, C]` (hidden states),
        negatives first; the negative is diffusers' (zeros, or the encoder on a black image)."""
        adapter = self._require_style()
        if getattr(self, "image_encoder", None) is None:
            raise ModelNotFoundError(f"the style reference needs the CLIP image encoder; load it from {ENCODER_HINT}.")
        positive, negative = self.encode_image(image, device, 1, adapter.spec.uses_hidden_states)
        return self._style_batch(positive[None], negative[None], batch_size, do_classifier_free_guidance)

    def style_embeds_from(self, embeds: torch.Tensor, batch_size: int, do_classifier_free_guidance: bool) -> torch.Tensor:
        """A user's style `ip_adapter_image_embeds` entry (diffusers' layout: `[2, n, ...]` negative
        then positive with CFG, `[1, n, ...]` without; or already `batch_size` rows each) for the batch."""
        embeds = torch.as_tensor(embeds)
        if do_classifier_free_guidance:
            if embeds.shape[0] % 2:
                raise IdgenError(f"style ip_adapter_image_embeds {tuple(embeds.shape)}: with guidance give the "
                                 "negative and positive halves (first dim 2 or 2 x batch).")
            negative, positive = embeds.chunk(2)
        else:
            negative, positive = None, embeds
        return self._style_batch(positive, negative, batch_size, do_classifier_free_guidance)

    @staticmethod
    def _style_batch(positive, negative, batch_size: int, do_cfg: bool) -> torch.Tensor:
        if positive.shape[0] not in (1, batch_size):
            raise IdgenError(f"style embeds have {positive.shape[0]} rows for a batch of {batch_size} prompts.")
        expand = (batch_size,) + tuple(positive.shape[1:])
        positive = positive.expand(expand)
        return torch.cat([negative.expand(expand), positive]) if do_cfg else positive

    def style_call_embeds(self, image, embeds, batch_size: int, do_classifier_free_guidance: bool, device,
                          dtype) -> tuple[torch.Tensor, bool]:
        """The style adapter's entry of `ip_adapter_image_embeds` for one call, from the call's
        `ip_adapter_image` or `ip_adapter_image_embeds` (one entry: the style's), and whether the style
        is off for the call (neither given: zero features, to be run at scale 0 with `style_off`)."""
        spec = self._require_style().spec
        if image is not None and embeds is not None:
            raise IdgenError("give at most one of `ip_adapter_image` and `ip_adapter_image_embeds` (the style reference).")
        if image is not None:
            out = self.encode_style_image(image, device, batch_size, do_classifier_free_guidance)
        elif embeds is not None:
            if isinstance(embeds, (list, tuple)):
                if len(embeds) != 1:
                    raise IdgenError(f"ip_adapter_image_embeds has {len(embeds)} entries; give one, the style "
                                     "adapter's (the identity adapter's comes from the identity inputs).")
                embeds = embeds[0]
            out = self.style_embeds_from(embeds, batch_size, do_classifier_free_guidance)
        else:
            zeros = torch.zeros((1, 1, 1, spec.clip_dim) if spec.uses_hidden_states else (1, 1, spec.clip_dim))
            out = self._style_batch(zeros, zeros, batch_size, do_classifier_free_guidance)
        return out.to(device=device, dtype=dtype), image is None and embeds is None

    @contextlib.contextmanager
    def style_off(self, off: bool = True) -> Iterator[None]:
        """With `off`, the style adapter at scale 0 (skipped exactly) for the `with` body."""
        adapter = get_style_adapter(self.unet)
        if not off or adapter is None:
            yield
            return
        saved = {n: p.scale[adapter.index] for n, p in self.unet.attn_processors.items()
                 if isinstance(p, IPAdapterAttnProcessor2_0)}
        set_ip_scale(self.unet, adapter.index, 0.0)
        try:
            yield
        finally:
            for name, proc in self.unet.attn_processors.items():
                if name in saved:
                    proc.scale[adapter.index] = saved[name]

    # ------------------------------------------------------------------ diffusers' methods

    def unload_ip_adapter(self):
        """With only a style adapter loaded, `unload_style_adapter()`; otherwise diffusers' behaviour."""
        if self.style_adapter_loaded:
            return self.unload_style_adapter()
        return super().unload_ip_adapter()

    def load_ip_adapter(self, *args, **kwargs):
        """diffusers' `load_ip_adapter`, refused while a style adapter is loaded (one IP-Adapter state)."""
        if self.style_adapter_loaded:
            raise IdgenError("a style adapter is loaded: call `unload_style_adapter()` before `load_ip_adapter()`.")
        return super().load_ip_adapter(*args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """diffusers' `save_pretrained` with the UNet saved without the style adapter (a UNet saved with
        IP processors inside does not reload); the style adapter stays loaded here but is not saved:
        load it again after `from_pretrained`."""
        if not self.style_adapter_loaded:
            return super().save_pretrained(save_directory, *args, **kwargs)
        logger.warning("save_pretrained: the style adapter is not saved; call `load_style_adapter` after loading.")
        with self._style_set_aside():
            return super().save_pretrained(save_directory, *args, **kwargs)
