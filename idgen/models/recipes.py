"""Every pipeline recipe of the application in one place: how each capability's pipeline is built
from configured weights (the registry components each method needs: the tables of
`idgen.models.methods`, re-exported here), and its tiny embedded default (random miniature models
plus a random adapter in the official file layout).

`build_generation_pipeline`, `build_edit_pipeline` and `build_restore_pipeline` return
`(pipeline, is_embedded_default)` by the rule of `idgen.models.build_or_embedded`. This module sits
above `idgen.pipelines` (it builds them), so `idgen.models` does not import it: `idgen doctor` and
the resolution code stay free of torch and diffusers.
"""

from __future__ import annotations

from typing import Optional

import torch
from diffusers import ControlNetModel
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from idgen.adapters.svfr import init_svfr
from idgen.errors import IdgenError
from idgen.models.fallback import build_or_embedded
from idgen.models.loading import check_controlnet_fits, check_model_files, from_pretrained, loading
from idgen.models.methods import (  # noqa: F401 (the *_ADAPTER tables: re-exported for the application)
    EDIT_ADAPTER, EDIT_METHODS, EDIT_WEIGHTS, GENERATION_ADAPTER, GENERATION_METHODS, GENERATION_WEIGHTS,
    RESTORE_REFERENCE_WEIGHTS, RESTORE_WEIGHTS,
)
from idgen.models.resolve import load_pipeline, resolve_component
from idgen.pipelines import (
    Arc2FacePipeline, FaceRestorePipeline, SVFRPipeline, StableDiffusionFaceIDInpaintPipeline,
    StableDiffusionFaceIDPipeline, StableDiffusionPVAInpaintPipeline, StableDiffusionXLInstantIDInpaintPipeline,
    StableDiffusionXLInstantIDPipeline, load_arc2face_pipeline, load_svfr_pipeline,
)
from idgen.testing import (
    TINY_RESAMPLER, random_faceid_state_dict, random_instantid_state_dict, seeded, tiny_clip_vision_encoder,
    tiny_controlnet, tiny_sd15_components, tiny_sdxl_components, tiny_svd_components,
)

ARCFACE_DIM = 512


# -- generation (`idgen generate`, the demo's Generate tab) -------------------------------------


def _tiny_generation_pipeline(method: str):
    """The embedded default: tiny random models + a random adapter in the official layout."""

    if method == "instantid":
        components = tiny_sdxl_components(0)
        components["controlnet"] = tiny_controlnet(components["unet"], 5)
        pipe = StableDiffusionXLInstantIDPipeline(**components)
        pipe.load_instantid(random_instantid_state_dict(pipe.unet, seed=6), resampler_config=TINY_RESAMPLER)
        return pipe
    if method == "arc2face":  # the 512-d embedding is padded into the text width: at least 512
        return Arc2FacePipeline(**tiny_sd15_components(0, text_width=ARCFACE_DIM), requires_safety_checker=False)
    # FaceID-Plus's resampler has width/64 heads: give the Plus default a 64-wide text encoder.
    components = tiny_sd15_components(0, text_width=32 if method == "faceid" else 64)
    pipe = StableDiffusionFaceIDPipeline(**components, requires_safety_checker=False)
    if method == "faceid":
        pipe.load_faceid(random_faceid_state_dict(pipe.unet, "faceid", seed=6), variant="faceid")
    else:
        encoder, processor = tiny_clip_vision_encoder(4, image_size=224)
        pipe.feature_extractor = processor
        sd = random_faceid_state_dict(pipe.unet, "faceid-plusv2", clip_dim=encoder.config.hidden_size, seed=6)
        pipe.load_faceid(sd, variant="faceid-plusv2", image_encoder=encoder)
    return pipe


def load_instantid_pipeline(cls, base_name: str, base: Optional[str], adapter: Optional[str], config, dtype):
    """An InstantID pipeline `cls` on the configured (or given) base `base_name`, IdentityNet and
    `ip-adapter.bin`. Raises ModelNotFoundError naming what is missing."""

    resolved = resolve_component(base_name, config=config, override=base)
    identitynet = resolve_component("instantid_identitynet", config=config)
    adapter_file = resolve_component("instantid_adapter", config=config, override=adapter)
    if resolved.format == "folder":
        check_controlnet_fits(identitynet.path, resolved.path, "the InstantID IdentityNet")
    controlnet = from_pretrained(ControlNetModel, identitynet.path, "the InstantID IdentityNet", torch_dtype=dtype)
    pipe = load_pipeline(cls, resolved, controlnet=controlnet, torch_dtype=dtype)
    with loading("the InstantID adapter", adapter_file.path):
        pipe.load_instantid(adapter_file.path)
    return pipe


def _on_accelerator(pipe, offload: bool):
    """`pipe` moved to CUDA when there is one, unless it is built for an offloading memory mode
    (`idgen.acceleration.memory`: the mode moves what it needs; the whole pipeline may not fit)."""
    if torch.cuda.is_available() and not offload:
        pipe.to("cuda")
    return pipe


def _real_generation_pipeline(method: str, base: Optional[str], adapter: Optional[str], config, offload: bool):
    """Pipelines on configured weights. Raises ModelNotFoundError naming what is missing."""

    dtype = torch.float16 if torch.cuda.is_available() else torch.float32
    if method == "arc2face":
        sd15 = resolve_component("sd15", config=config, override=base)
        unet = resolve_component("arc2face_unet", config=config, override=adapter)
        encoder = resolve_component("arc2face_encoder", config=config)
        for folder in (sd15.path, unet.path, encoder.path):
            check_model_files(folder)
        with loading("Arc2Face", unet.path):
            pipe = load_arc2face_pipeline(sd15.path, unet_folder=unet.path, encoder_folder=encoder.path, torch_dtype=dtype)
    elif method == "instantid":
        pipe = load_instantid_pipeline(StableDiffusionXLInstantIDPipeline, "sdxl", base, adapter, config, dtype)
    else:
        sd15 = resolve_component("sd15", config=config, override=base)
        name = "faceid_sd15" if method == "faceid" else "faceid_plusv2_sd15"
        adapter_file = resolve_component(name, config=config, override=adapter)
        pipe = load_pipeline(StableDiffusionFaceIDPipeline, sd15, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False)
        image_encoder = None
        if method == "faceid-plusv2":
            clip = resolve_component("clip_vit_h", config=config)
            image_encoder = from_pretrained(CLIPVisionModelWithProjection, clip.path, "the CLIP ViT-H image encoder",
                                            torch_dtype=dtype)
            pipe.feature_extractor = CLIPImageProcessor()
        with loading("the IP-Adapter-FaceID file", adapter_file.path):
            pipe.load_faceid(adapter_file.path, variant=method, image_encoder=image_encoder)
    return _on_accelerator(pipe, offload)


def build_generation_pipeline(method: str, *, base: Optional[str] = None, adapter: Optional[str] = None,
                   embedded_default: Optional[bool] = None, offload: bool = False):
    """`(pipeline, is_embedded_default)` for `method`; `offload`: leave it on the CPU for an
    offloading memory mode.

    With `embedded_default=None`, configured weights are used when every file is found, and the
    tiny embedded default when none of the method's weights are configured at all; a partial
    configuration is an error (it names the missing file) rather than a silent fallback.
    """

    if method not in GENERATION_METHODS:
        raise IdgenError(f"method must be one of {', '.join(GENERATION_METHODS)}, got {method!r}.")
    return build_or_embedded(method, GENERATION_WEIGHTS[method], lambda config: _real_generation_pipeline(method, base, adapter, config, offload),
                             lambda: _tiny_generation_pipeline(method), embedded_default=embedded_default,
                             explicit=bool(base or adapter))


# -- identity inpainting and face swap (`idgen inpaint`, `idgen swap`) ---------------------------


def _tiny_edit_pipeline(method: str):
    """The embedded default: tiny random inpainting models with a random adapter."""

    if method == "instantid":
        components = tiny_sdxl_components(0, in_channels=9)
        components["controlnet"] = tiny_controlnet(components["unet"], 5)
        pipe = StableDiffusionXLInstantIDInpaintPipeline(**components)
        pipe.load_instantid(random_instantid_state_dict(pipe.unet, seed=6), resampler_config=TINY_RESAMPLER)
    elif method == "faceid":
        pipe = StableDiffusionFaceIDInpaintPipeline(**tiny_sd15_components(0, in_channels=9))
        pipe.load_faceid(random_faceid_state_dict(pipe.unet, "faceid", seed=6), variant="faceid")
    else:
        pipe = StableDiffusionPVAInpaintPipeline(**tiny_sd15_components(0, in_channels=9))
        with seeded(6):
            pipe.init_pva(num_tokens=4, num_layers=1, num_heads=2, feedforward_dim=64)
    for module in pipe.components.values():
        if hasattr(module, "eval"):
            module.eval()
    return pipe


def _real_edit_pipeline(method: str, base: Optional[str], adapter: Optional[str], config, offload: bool):
    dtype = torch.float16 if torch.cuda.is_available() else torch.float32
    if method == "instantid":
        pipe = load_instantid_pipeline(StableDiffusionXLInstantIDInpaintPipeline, "sdxl_inpaint", base, adapter, config, dtype)
    else:
        sd = resolve_component("sd15_inpaint", config=config, override=base)
        cls = StableDiffusionPVAInpaintPipeline if method == "pva" else StableDiffusionFaceIDInpaintPipeline
        pipe = load_pipeline(cls, sd, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False)
        name = "pva_adapter" if method == "pva" else "faceid_sd15"
        adapter_path = resolve_component(name, config=config, override=adapter).path
        with loading(f"the {method} adapter", adapter_path):
            if method == "pva":
                pipe.load_pva(adapter_path)
            else:
                pipe.load_faceid(adapter_path, variant="faceid")
    return _on_accelerator(pipe, offload)


def build_edit_pipeline(method: str, *, base: Optional[str] = None, adapter: Optional[str] = None,
                        embedded_default: Optional[bool] = None, offload: bool = False):
    """`(inpainting pipeline, is_embedded_default)` for `method` (see `build_generation_pipeline`
    for the fallback rule: the tiny default only when none of the method's weights are configured,
    and `offload`)."""

    if method not in EDIT_METHODS:
        raise IdgenError(f"method must be one of {', '.join(EDIT_METHODS)}, got {method!r}.")
    return build_or_embedded(f"{method} inpainting", EDIT_WEIGHTS[method], lambda config: _real_edit_pipeline(method, base, adapter, config, offload),
                             lambda: _tiny_edit_pipeline(method), embedded_default=embedded_default,
                             explicit=bool(base or adapter))


# -- restoration (`idgen restore`, `idgen eval restore`) ----------------------------------------


def _tiny_restore_pipeline(kind: str, reference: bool = False):
    if kind == "video":
        parts = tiny_svd_components(0)
        with seeded(3):
            projection = init_svfr(parts["unet"])  # widens the UNet in place
        pipe = SVFRPipeline(vae=parts["vae"], unet=parts["unet"], scheduler=parts["scheduler"],
                            id_projection=projection)
    else:
        parts = tiny_sd15_components(0)
        pipe = FaceRestorePipeline(**parts, controlnet=tiny_controlnet(parts["unet"], 5))
        if reference:
            pipe.load_faceid(random_faceid_state_dict(pipe.unet, "faceid", seed=6), variant="faceid")
    for module in pipe.components.values():
        if hasattr(module, "eval"):
            module.eval()
    return pipe


def _real_restore_pipeline(kind: str, config, reference: bool = False, offload: bool = False):
    dtype = torch.float16 if torch.cuda.is_available() else torch.float32
    if kind == "video":
        folders = [resolve_component(name, config=config).path for name in RESTORE_WEIGHTS["video"]]
        for folder in folders:
            check_model_files(folder)
        with loading("SVFR", folders[1]):
            pipe = load_svfr_pipeline(*folders, torch_dtype=dtype)
    else:
        base = resolve_component("sd15", config=config)
        controlnet_path = resolve_component("restore_controlnet", config=config).path
        if base.format == "folder":
            check_controlnet_fits(controlnet_path, base.path, "the restoration ControlNet")
        controlnet = from_pretrained(ControlNetModel, controlnet_path, "the restoration ControlNet", torch_dtype=dtype)
        pipe = load_pipeline(FaceRestorePipeline, base, controlnet=controlnet,
                             torch_dtype=dtype, safety_checker=None, requires_safety_checker=False)
        if reference:
            faceid = resolve_component("faceid_sd15", config=config).path
            with loading("the IP-Adapter-FaceID file", faceid):
                pipe.load_faceid(faceid, variant="faceid")
    return _on_accelerator(pipe, offload)


def build_restore_pipeline(kind: str, *, reference: bool = False, embedded_default: Optional[bool] = None,
                           offload: bool = False):
    """`(pipeline, is_embedded_default)`: `FaceRestorePipeline` ("image") or `SVFRPipeline` ("video");
    `offload` as in `build_generation_pipeline`.

    `reference`: photos restored with a clean reference of the person: IP-Adapter-FaceID is loaded
    into the restoration pipeline (SVFR takes its identity without extra weights).
    """
    if kind not in RESTORE_WEIGHTS:
        raise IdgenError(f"kind must be 'image' or 'video', got {kind!r}.")
    with_faceid = reference and kind == "image"
    needs = RESTORE_WEIGHTS[kind][1:] + (RESTORE_REFERENCE_WEIGHTS if with_faceid else ())
    return build_or_embedded(f"{kind} restoration", needs, lambda config: _real_restore_pipeline(kind, config, with_faceid, offload),
                             lambda: _tiny_restore_pipeline(kind, with_faceid), embedded_default=embedded_default,
                             base=RESTORE_WEIGHTS[kind][:1])
