"""Loading the official Arc2Face folders (`arc2face/` UNet, `encoder/` CLIP text encoder) unchanged."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from idgen.errors import ModelNotFoundError

REQUIRED = {
    "arc2face": ("config.json", ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    "encoder": ("config.json", ("model.safetensors", "pytorch_model.bin")),
}


def check_arc2face_folders(unet_folder: os.PathLike, encoder_folder: os.PathLike) -> tuple[Path, Path]:
    """Check the official `arc2face/` (UNet) and `encoder/` folders; name every missing file."""
    folders = {"arc2face": Path(unet_folder), "encoder": Path(encoder_folder)}
    missing = []
    for sub, files in REQUIRED.items():
        for spec in files:
            options = spec if isinstance(spec, tuple) else (spec,)
            if not any((folders[sub] / name).is_file() for name in options):
                missing.append(" or ".join(str(folders[sub] / name) for name in options))
    if missing:
        raise ModelNotFoundError(f"Arc2Face files missing: {'; '.join(missing)} (from FoivosPar/Arc2Face).")
    return folders["arc2face"], folders["encoder"]


def load_arc2face_pipeline(base_sd15: os.PathLike, arc2face_root: Optional[os.PathLike] = None, *,
                           unet_folder: Optional[os.PathLike] = None, encoder_folder: Optional[os.PathLike] = None,
                           torch_dtype=None, scheduler: Optional[object] = None):
    """`Arc2FacePipeline` from an SD1.5 diffusers folder (VAE, tokenizer, scheduler config) and the
    official Arc2Face files: `arc2face_root` holding `arc2face/` (UNet) and `encoder/` (text
    encoder), or the two folders given apart. DPM-Solver++ as in the official demo unless
    `scheduler` is given."""
    from diffusers import DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    from idgen.pipelines.pipeline_arc2face import Arc2FacePipeline

    root = Path(arc2face_root) if arc2face_root is not None else None
    unet_path, encoder_path = check_arc2face_folders(unet_folder or root / "arc2face", encoder_folder or root / "encoder")
    kwargs = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    unet = UNet2DConditionModel.from_pretrained(str(unet_path), local_files_only=True, **kwargs)
    encoder = CLIPTextModel.from_pretrained(str(encoder_path), local_files_only=True, **kwargs)
    pipe = Arc2FacePipeline.from_pretrained(str(base_sd15), unet=unet, text_encoder=encoder, safety_checker=None,
                                            requires_safety_checker=False, local_files_only=True, **kwargs)
    pipe.scheduler = scheduler or DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    return pipe
