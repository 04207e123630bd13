"""Loading the official Arc2Face folders (`arc2face/` UNet, `encoder/` CLIP text encoder) unchanged."""

from __future__ import annotations

import os
from pathlib import Path

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
