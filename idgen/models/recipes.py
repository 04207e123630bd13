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

from typing import Optional, Sequence

import torch
from diffusers import ControlNetModel
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from idgen.adapters.svfr import init_svfr
from idgen.errors import CheckpointError, IdgenError
from idgen.models.fallback import build_or_embedded
from idgen.models.loading import check_controlnet_fits, check_json_file, check_model_files, from_pretrained, loading
from idgen.models.methods import (
    ARCFACE_DIM, EDIT_METHODS, EDIT_WEIGHTS, GENERATION_ADAPTER, GENERATION_ARCHITECTURE,
    GENERATION_METHODS, GENERATION_WEIGHTS, RESTORE_REFERENCE_WEIGHTS, RESTORE_WEIGHTS, STYLE_WEIGHTS, TINY_CONTROLNET,
)
from idgen.models.resolve import load_pipeline, resolve_component
from idgen.pipelines import (
    Arc2FacePipeline, FaceRestorePipeline, SVFRPipeline, StableDiffusionFaceIDInpaintPipeline,
    StableDiffusionFaceIDPipeline, StableDiffusionInstantIDPipeline, StableDiffusionPVAInpaintPipeline,
    StableDiffusionXLFaceIDPipeline, StableDiffusionXLInstantIDImg2ImgPipeline, StableDiffusionXLInstantIDInpaintPipeline,
    StableDiffusionXLInstantIDPipeline, StableDiffusionXLPuLIDPipeline, load_arc2face_pipeline, load_svfr_pipeline,
)
from idgen.testing import (
    TINY_RESAMPLER, random_faceid_state_dict, random_instantid_state_dict, seeded, tiny_clip_vision_encoder,
    tiny_controlnet, tiny_sd15_components, tiny_sdxl_components, tiny_svd_components,
)
from idgen.adapters.pulid.config import TINY_ID_FORMER_V11
from idgen.pipelines.pipeline_stable_diffusion_xl_pulid import official_scheduler, official_v11_scheduler
from idgen.testing.pulid import tiny_pulid_parts
from idgen.testing.style import random_style_state_dict


# -- generation (`idgen generate`, the demo's Generate tab) -------------------------------------


def _tiny_generation_pipeline(method: str, img2img: bool = False):
    """The embedded default: tiny random models + a random adapter in the official layout."""

    if method in ("instantid", "instantid-sd15"):
        xl = method == "instantid"
        components = tiny_sdxl_components(0) if xl else tiny_sd15_components(0)
        components["controlnet"] = tiny_controlnet(components["unet"], 5)
        cls = (StableDiffusionXLInstantIDImg2ImgPipeline if img2img else StableDiffusionXLInstantIDPipeline) if xl \
            else StableDiffusionInstantIDPipeline
        pipe = cls(**components)
        pipe.load_instantid(random_instantid_state_dict(pipe.unet, seed=6), resampler_config=TINY_RESAMPLER)
        return pipe
    if method == "arc2face":  # the 512-d embedding is padded into the text width: at least 512
        return Arc2FacePipeline(**tiny_sd15_components(0, text_width=ARCFACE_DIM), requires_safety_checker=False)
    if method == "pulid":
        pipe = StableDiffusionXLPuLIDPipeline(**tiny_sdxl_components(0))
        state_dict, eva_clip = tiny_pulid_parts(pipe.unet, "v1.1", seed=6)
        pipe.load_pulid(state_dict, eva_clip=eva_clip, encoder=TINY_ID_FORMER_V11)
        return _pulid_scheduler(pipe)
    if method == "faceid-sdxl":
        pipe = StableDiffusionXLFaceIDPipeline(**tiny_sdxl_components(0))
        pipe.load_faceid(random_faceid_state_dict(pipe.unet, "faceid", seed=6), variant="faceid")
        return pipe
    # FaceID-Plus's resampler has width/64 heads: give the Plus default a 64-wide text encoder.
    components = tiny_sd15_components(0, text_width=64 if method == "faceid-plusv2" else 32)
    pipe = StableDiffusionFaceIDPipeline(**components, requires_safety_checker=False)
    if method == "faceid-plusv2":
        encoder, processor = tiny_clip_vision_encoder(4, image_size=224)
        pipe.feature_extractor = processor
        sd = random_faceid_state_dict(pipe.unet, "faceid-plusv2", clip_dim=encoder.config.hidden_size, seed=6)
        pipe.load_faceid(sd, variant="faceid-plusv2", image_encoder=encoder)
    else:
        pipe.load_faceid(random_faceid_state_dict(pipe.unet, method, seed=6), variant=method)
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


def _load_instantid_sd15(base: Optional[str], adapter: Optional[str], config, dtype):
    """InstantID on SD1.5 from an `idgen train adapter --kind instantid` folder (no official
    release exists): `ip-adapter.safetensors`, `resampler_config.json`, `ControlNetModel/`."""
    resolved = resolve_component("sd15", config=config, override=base)
    folder = resolve_component("instantid_sd15", config=config, override=adapter).path
    if resolved.format == "folder":
        check_controlnet_fits(folder / "ControlNetModel", resolved.path, "the SD1.5 InstantID IdentityNet")
    controlnet = from_pretrained(ControlNetModel, folder / "ControlNetModel", "the SD1.5 InstantID IdentityNet",
                                 torch_dtype=dtype)
    pipe = load_pipeline(StableDiffusionInstantIDPipeline, resolved, controlnet=controlnet, torch_dtype=dtype,
                         safety_checker=None, requires_safety_checker=False)
    with loading("the SD1.5 InstantID adapter", folder / "ip-adapter.safetensors"):
        resampler = check_json_file(folder / "resampler_config.json")
        pipe.load_instantid(folder / "ip-adapter.safetensors", resampler_config=resampler)
    return pipe


def _pulid_scheduler(pipe):
    """The official apps' scheduler for the loaded PuLID version (v1: DPM++ with trailing
    timesteps, for SDXL-Lightning; v1.1: DPM++ 2M Karras)."""
    pick = official_scheduler if pipe.pulid_adapter.version == "v1" else official_v11_scheduler
    pipe.scheduler = pick(pipe.scheduler.config)
    return pipe


def _on_accelerator(pipe, offload: bool):
    """`pipe` moved to CUDA when there is one, unless it is built for an offloading memory mode
    (`idgen.acceleration.memory`: the mode moves what it needs; the whole pipeline may not fit)."""
    if torch.cuda.is_available() and not offload:
        pipe.to("cuda")
    return pipe


def _dtype():
    """fp16 on CUDA, fp32 on the CPU (whose fp16 kernels are slow or missing)."""
    return torch.float16 if torch.cuda.is_available() else torch.float32


def _real_generation_pipeline(method: str, base: Optional[str], adapter: Optional[str], config, img2img: bool = False):
    """Pipelines on configured weights. Raises ModelNotFoundError naming what is missing."""

    dtype = _dtype()
    if method == "arc2face":
        sd15 = resolve_component("sd15", config=config, override=base)
        unet = resolve_component("arc2face_unet", config=config, override=adapter)
        encoder = resolve_component("arc2face_encoder", config=config)
        for folder in (sd15.path, unet.path, encoder.path):
            check_model_files(folder)
        with loading("Arc2Face", unet.path):
            return load_arc2face_pipeline(sd15.path, unet_folder=unet.path, encoder_folder=encoder.path, torch_dtype=dtype)
    if method == "instantid":
        cls = StableDiffusionXLInstantIDImg2ImgPipeline if img2img else StableDiffusionXLInstantIDPipeline
        return load_instantid_pipeline(cls, "sdxl", base, adapter, config, dtype)
    if method == "instantid-sd15":
        return _load_instantid_sd15(base, adapter, config, dtype)
    if method == "pulid":  # the base: SDXL or an SDXL-Lightning / community model (see the README)
        pipe = load_pipeline(StableDiffusionXLPuLIDPipeline, resolve_component("sdxl", config=config, override=base),
                             torch_dtype=dtype)
        adapter_file = resolve_component("pulid", config=config, override=adapter).path
        eva_clip = resolve_component("eva_clip", config=config).path
        with loading("PuLID", adapter_file):
            pipe.load_pulid(adapter_file, eva_clip=eva_clip)
        return _pulid_scheduler(pipe)
    xl = method == "faceid-sdxl"
    resolved = resolve_component("sdxl" if xl else "sd15", config=config, override=base)
    adapter_file = resolve_component(GENERATION_ADAPTER[method], config=config, override=adapter)
    if xl:
        pipe = load_pipeline(StableDiffusionXLFaceIDPipeline, resolved, torch_dtype=dtype)
    else:
        pipe = load_pipeline(StableDiffusionFaceIDPipeline, resolved, torch_dtype=dtype, safety_checker=None,
                             requires_safety_checker=False)
    image_encoder = None
    if method == "faceid-plusv2":
        clip = resolve_component("clip_vit_h", config=config)
        image_encoder = from_pretrained(CLIPVisionModelWithProjection, clip.path, "the CLIP ViT-H image encoder",
                                        torch_dtype=dtype)
        pipe.feature_extractor = CLIPImageProcessor()
    with loading("the IP-Adapter-FaceID file", adapter_file.path):
        pipe.load_faceid(adapter_file.path, variant="faceid" if xl else method, image_encoder=image_encoder)
    return pipe


def _extra_controlnets(pipe, paths, config, embedded: bool) -> None:
    """Put the ControlNets at `paths` after the IdentityNet (`tiny`: a random miniature for the
    embedded default). Raises CheckpointError for one made for another base."""
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    extras = []
    for i, path in enumerate(paths):
        if path == TINY_CONTROLNET:
            if not embedded:
                raise IdgenError("the `tiny` ControlNet is a random miniature for the embedded default; give the "
                                 "folder of a ControlNet for your base model.")
            extras.append(tiny_controlnet(pipe.unet, 11 + i))
            continue
        check_model_files(path)
        controlnet = from_pretrained(ControlNetModel, path, f"the ControlNet {path}", torch_dtype=pipe.unet.dtype)
        if controlnet.config.cross_attention_dim != pipe.unet.config.cross_attention_dim:
            raise CheckpointError(
                f"the ControlNet at {path} is for a base with {controlnet.config.cross_attention_dim}-wide text "
                f"features, this pipeline's UNet has {pipe.unet.config.cross_attention_dim}; give one made for it.")
        extras.append(controlnet)
    if extras:
        pipe.register_modules(controlnet=MultiControlNetModel([pipe.controlnet, *extras]))


def _style_adapter(pipe, method: str, config, embedded: bool) -> None:
    """Load the standard IP-Adapter of the method's architecture as the style reference."""
    if embedded:
        encoder, processor = tiny_clip_vision_encoder(8, image_size=32)
        pipe.load_style_adapter(random_style_state_dict(pipe.unet, encoder.config.projection_dim, seed=9),
                                image_encoder=encoder, feature_extractor=processor)
        return
    adapter_name, encoder_name = STYLE_WEIGHTS[GENERATION_ARCHITECTURE[method]]
    adapter_file = resolve_component(adapter_name, config=config).path
    encoder_folder = resolve_component(encoder_name, config=config).path
    encoder = from_pretrained(CLIPVisionModelWithProjection, encoder_folder, "the style adapter's CLIP image encoder",
                              torch_dtype=pipe.unet.dtype)
    with loading("the style IP-Adapter", adapter_file):
        pipe.load_style_adapter(adapter_file, image_encoder=encoder, feature_extractor=CLIPImageProcessor())


def build_generation_pipeline(method: str, *, base: Optional[str] = None, adapter: Optional[str] = None,
                              embedded_default: Optional[bool] = None, offload: bool = False, img2img: bool = False,
                              controls: Sequence[str] = (), style: bool = False):
    """`(pipeline, is_embedded_default)` for `method`; `offload`: leave it on the CPU for an
    offloading memory mode; `img2img`: the method's img2img pipeline; `controls`: ControlNet
    folders after the IdentityNet (`tiny` for the embedded default's miniature); `style`: with the
    standard IP-Adapter of the architecture loaded as a style reference.

    With `embedded_default=None`, configured weights are used when every file is found, and the
    tiny embedded default when none of the method's weights are configured at all; a partial
    configuration is an error (it names the missing file) rather than a silent fallback.
    """

    if method not in GENERATION_METHODS:
        raise IdgenError(f"method must be one of {', '.join(GENERATION_METHODS)}, got {method!r}.")

    def finish(pipe, config, embedded: bool):
        _extra_controlnets(pipe, controls, config, embedded)
        if style:
            _style_adapter(pipe, method, config, embedded)
        return pipe

    needs = GENERATION_WEIGHTS[method] + (STYLE_WEIGHTS[GENERATION_ARCHITECTURE[method]] if style else ())
    return build_or_embedded(
        method, needs,
        lambda config: _on_accelerator(finish(_real_generation_pipeline(method, base, adapter, config, img2img), config,
                                              False), offload),
        lambda: finish(_tiny_generation_pipeline(method, img2img), None, True), embedded_default=embedded_default,
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
    dtype = _dtype()
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
    dtype = _dtype()
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
