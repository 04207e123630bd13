"""Known components: what each needs on disk and where it goes by default.

`files` lists required paths relative to the component's folder; a tuple inside means "any one
of these". A `single_file` component is one file (its `files` entry names the expected name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

FileSpec = Union[str, tuple[str, ...]]
WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
TEXT_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class Component:
    name: str
    description: str
    default: str  # relative to $IDGEN_HOME
    files: tuple[FileSpec, ...]
    single_file: bool = False
    source: str = ""  # where users get it


def _sd_pipeline(name, description, default, source, xl=False) -> Component:
    files = ["model_index.json", "unet/config.json", ("unet/" + WEIGHTS[0], "unet/" + WEIGHTS[1]),
             "vae/config.json", "text_encoder/config.json", ("tokenizer/vocab.json", "tokenizer/tokenizer.json"),
             "scheduler/scheduler_config.json"]
    if xl:
        files += ["text_encoder_2/config.json", ("tokenizer_2/vocab.json", "tokenizer_2/tokenizer.json")]
    return Component(name, description, default, tuple(files), source=source)


def _faceid(name, description, filename) -> Component:
    """One of h94/IP-Adapter-FaceID's files, kept under its released name."""
    return Component(name, description, f"models/IP-Adapter-FaceID/{filename}", (filename,), single_file=True,
                     source="h94/IP-Adapter-FaceID")


REGISTRY: dict[str, Component] = {c.name: c for c in (
    _sd_pipeline("sd15", "Stable Diffusion 1.5 (diffusers folder; a single .safetensors file also works)",
                 "models/sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
    _sd_pipeline("sdxl", "Stable Diffusion XL base 1.0 (diffusers folder; a single .safetensors file also works)",
                 "models/sdxl", "stabilityai/stable-diffusion-xl-base-1.0", xl=True),
    _sd_pipeline("sd15_inpaint", "Stable Diffusion inpainting, 9-channel UNet (SD1.5 or SD2 inpainting folder)",
                 "models/sd-inpainting", "stable-diffusion-v1-5/stable-diffusion-inpainting (PVA: stabilityai/stable-diffusion-2-inpainting)"),
    _sd_pipeline("sdxl_inpaint", "SDXL inpainting, 9-channel UNet (diffusers folder)", "models/sdxl-inpainting",
                 "diffusers/stable-diffusion-xl-1.0-inpainting-0.1", xl=True),
    Component("pva_adapter", "PVA identity-inpainting weights (official FPIP.bin or an idgen pva_adapter/ folder)",
              "models/PVA/FPIP.bin", ("FPIP.bin",), single_file=True, source="your PVA training run (idgen train adapter --kind pva)"),
    Component("restore_controlnet", "FaceRestorePipeline's restoration ControlNet (trained by `idgen train restore`)",
              "models/restore/controlnet", ("config.json", WEIGHTS), source="your `idgen train restore` run: controlnet/"),
    Component("svd", "Stable Video Diffusion img2vid-xt (diffusers folder; SVFR's base)", "models/svd",
              ("model_index.json", "unet/config.json", "vae/config.json", "scheduler/scheduler_config.json"),
              source="stabilityai/stable-video-diffusion-img2vid-xt"),
    Component("svfr_unet", "SVFR's fine-tuned video UNet (unet.pth)", "models/SVFR/unet.pth", ("unet.pth",),
              single_file=True, source="SVFR release (Google Drive, see the SVFR README): unet.pth"),
    Component("svfr_id_linear", "SVFR's identity projection (id_linear.pth)", "models/SVFR/id_linear.pth",
              ("id_linear.pth",), single_file=True, source="SVFR release: id_linear.pth"),
    Component("instantid_identitynet", "InstantID IdentityNet (an SDXL ControlNet)", "models/InstantID/ControlNetModel",
              ("config.json", WEIGHTS), source="InstantX/InstantID: ControlNetModel/"),
    Component("instantid_adapter", "InstantID ip-adapter.bin (Resampler + identity attention)",
              "models/InstantID/ip-adapter.bin", ("ip-adapter.bin",), single_file=True, source="InstantX/InstantID: ip-adapter.bin"),
    Component("arc2face_unet", "Arc2Face fine-tuned SD1.5 UNet", "models/Arc2Face/arc2face",
              ("config.json", WEIGHTS), source="FoivosPar/Arc2Face: arc2face/"),
    Component("arc2face_encoder", "Arc2Face fine-tuned CLIP text encoder", "models/Arc2Face/encoder",
              ("config.json", TEXT_WEIGHTS), source="FoivosPar/Arc2Face: encoder/"),
    _faceid("faceid_sd15", "IP-Adapter-FaceID for SD1.5", "ip-adapter-faceid_sd15.bin"),
    _faceid("faceid_plusv2_sd15", "IP-Adapter-FaceID-Plus v2 for SD1.5", "ip-adapter-faceid-plusv2_sd15.bin"),
    _faceid("faceid_sdxl", "IP-Adapter-FaceID for SDXL", "ip-adapter-faceid_sdxl.bin"),
    _faceid("faceid_portrait_sd15", "IP-Adapter-FaceID-Portrait for SD1.5 (several photos, no LoRA)",
            "ip-adapter-faceid-portrait-v11_sd15.bin"),
    Component("instantid_sd15", "InstantID for an SD1.5 base (no official release: an `idgen train adapter "
              "--kind instantid` output folder)", "models/InstantID-SD15",
              ("ip-adapter.safetensors", "resampler_config.json", "ControlNetModel/config.json"),
              source="your `idgen train adapter --kind instantid --base <sd15>` run"),
    Component("pulid", "PuLID for SDXL (v1.1 or v1: ID encoder + ID attention)", "models/PuLID/pulid_v1.1.safetensors",
              (("pulid_v1.1.safetensors", "pulid_v1.bin"),), single_file=True, source="guozinan/PuLID"),
    Component("eva_clip", "EVA02-CLIP-L-14-336 (PuLID's image features)", "models/EVA-CLIP/EVA02_CLIP_L_336_psz14_s6B.pt",
              ("EVA02_CLIP_L_336_psz14_s6B.pt",), single_file=True, source="QuanSun/EVA-CLIP: EVA02_CLIP_L_336_psz14_s6B.pt"),
    Component("style_adapter_sdxl", "IP-Adapter for SDXL: the style reference (InstantStyle)",
              "models/IP-Adapter/sdxl_models/ip-adapter_sdxl.bin", ("ip-adapter_sdxl.bin",), single_file=True,
              source="h94/IP-Adapter: sdxl_models/ip-adapter_sdxl.bin"),
    Component("style_adapter_sd15", "IP-Adapter for SD1.5: the style reference (InstantStyle)",
              "models/IP-Adapter/models/ip-adapter_sd15.bin", ("ip-adapter_sd15.bin",), single_file=True,
              source="h94/IP-Adapter: models/ip-adapter_sd15.bin"),
    Component("clip_vit_bigg", "OpenCLIP ViT-bigG/14 image encoder (the SDXL style IP-Adapter)",
              "models/IP-Adapter/sdxl_models/image_encoder", ("config.json", TEXT_WEIGHTS),
              source="h94/IP-Adapter: sdxl_models/image_encoder/"),
    Component("clip_vit_h", "CLIP ViT-H/14 image encoder (FaceID-Plus v2, the SD1.5 style IP-Adapter)", "models/CLIP-ViT-H-14",
              ("config.json", TEXT_WEIGHTS), source="laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),
    Component("codeformer", "CodeFormer face restorer (`--enhance codeformer[:W]`)", "models/CodeFormer/codeformer.pth",
              ("codeformer.pth",), single_file=True, source="github.com/sczhou/CodeFormer releases v0.1.0: codeformer.pth"),
    Component("gfpgan", "GFPGAN v1.4 / v1.3 face restorer (`--enhance gfpgan`)", "models/GFPGAN/GFPGANv1.4.pth",
              (("GFPGANv1.4.pth", "GFPGANv1.3.pth"),), single_file=True,
              source="github.com/TencentARC/GFPGAN releases v1.3.0: GFPGANv1.4.pth"),
    Component("restoreformer", "RestoreFormer++ (or RestoreFormer) face restorer (`--enhance restoreformer`)",
              "models/RestoreFormer/RestoreFormer++.ckpt", (("RestoreFormer++.ckpt", "RestoreFormer.ckpt"),),
              single_file=True, source="github.com/wzhouxiff/RestoreFormerPlusPlus releases: RestoreFormer++.ckpt"),
    Component("face_parsing", "BiSeNet face parsing, 19 CelebAMask-HQ classes (paste masks, --region/--keep)",
              "models/face-parsing/79999_iter.pth", (("79999_iter.pth", "parsing_bisenet.pth"),), single_file=True,
              source="zllrunning/face-parsing.PyTorch: 79999_iter.pth (or facexlib releases v0.2.0: parsing_bisenet.pth)"),
    Component("face_occluder", "facefusion's XSeg occluder (ONNX): what covers a face (hands, hair, objects)",
              "models/facefusion/xseg_1.onnx", (("xseg_1.onnx", "xseg_2.onnx", "xseg_3.onnx", "dfl_xseg.onnx"),),
              single_file=True, source="github.com/facefusion/facefusion-assets releases models-3.1.0: xseg_1.onnx"),
    Component("insightface_antelopev2", "insightface antelopev2 pack (SCRFD + glintr100 ArcFace)",
              "insightface/models/antelopev2", ("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
              source="insightface model zoo: antelopev2"),
    Component("insightface_buffalo_l", "insightface buffalo_l pack (SCRFD + w600k ArcFace)",
              "insightface/models/buffalo_l", ("det_10g.onnx", "w600k_r50.onnx"), source="insightface model zoo: buffalo_l"),
)}
