"""IP-Adapter-FaceID (FaceID, FaceID-Plus v1/v2, FaceID-Portrait; SD1.5 and SDXL) on diffusers' native IP-Adapter
modules: `config` (`FaceIDSpec`), `model` (the projection), `layout` checks and maps the official
checkpoint (key maps and their inverse), `loader` installs it into a UNet (where
all its state lives: `get_faceid_state(unet)`). The pipelines are `idgen.pipelines`'
`StableDiffusionFaceIDPipeline`, `StableDiffusionXLFaceIDPipeline` and their inpainting twins."""

from idgen.adapters.faceid.config import VARIANTS, FaceIDSpec
from idgen.adapters.faceid.layout import (
    FaceIDWeights,
    convert_faceid_checkpoint,
    expected_layout,
    extract_faceid_state_dict,
    infer_spec,
    processor_names,
)
from idgen.adapters.faceid.model import build_image_projection
from idgen.adapters.faceid.loader import (
    FACEID_ADAPTER_NAME,
    FACEID_SUBFOLDER,
    FaceIDLoaderMixin,
    FaceIDState,
    get_faceid_state,
    install_faceid,
    load_faceid_into_unet,
    uninstall_faceid,
    unload_faceid_from_unet,
)

__all__ = [
    "FACEID_ADAPTER_NAME",
    "FACEID_SUBFOLDER",
    "VARIANTS",
    "FaceIDLoaderMixin",
    "FaceIDSpec",
    "FaceIDState",
    "FaceIDWeights",
    "build_image_projection",
    "convert_faceid_checkpoint",
    "expected_layout",
    "extract_faceid_state_dict",
    "get_faceid_state",
    "infer_spec",
    "install_faceid",
    "load_faceid_into_unet",
    "processor_names",
    "uninstall_faceid",
    "unload_faceid_from_unet",
]
