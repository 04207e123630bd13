"""idgen's diffusers pipelines (importable as `idgen.pipelines`).

- `InstantIDPipeline` (SDXL) and `StableDiffusionInstantIDPipeline` (SD1.5 architecture):
  IdentityNet ControlNet + Resampler identity tokens, official `ip-adapter.bin`.
- `FaceIDPipeline` (SD1.5) and `FaceIDXLPipeline` (SDXL): IP-Adapter-FaceID / FaceID-Plus v2.
- `Arc2FacePipeline` (SD1.5): ArcFace embedding injected into the CLIP text encoder's input.
- `PVAInpaintPipeline` / `PVAInpaintXLPipeline`: PVA identity inpainting;
  `FaceIDInpaintPipeline` / `FaceIDInpaintXLPipeline`, `InstantIDInpaintPipeline` /
  `StableDiffusionInstantIDInpaintPipeline`: the identity adapters on inpainting UNets.
- `FaceSwapPipeline`: align, mask, inpaint with one of those, colour-match, paste back.
- `FaceRestorePipeline`: blind face restoration through a restoration ControlNet (SD1.5);
  `SVFRPipeline`: SVFR-style video face restoration on Stable Video Diffusion.
"""

from idgen.pipelines.pipeline_arc2face import Arc2FacePipeline, load_arc2face_pipeline
from idgen.pipelines.pipeline_face_restore import FaceRestorePipeline
from idgen.pipelines.pipeline_face_swap import FaceSwapOutput, FaceSwapPipeline
from idgen.pipelines.pipeline_faceid import FaceIDInpaintPipeline, FaceIDInpaintXLPipeline, FaceIDPipeline, FaceIDXLPipeline
from idgen.pipelines.pipeline_instantid_inpaint import InstantIDInpaintPipeline, StableDiffusionInstantIDInpaintPipeline
from idgen.pipelines.pipeline_pva_inpaint import PVAInpaintPipeline, PVAInpaintXLPipeline
from idgen.pipelines.pipeline_svfr import SVFRPipeline
from idgen.pipelines.pipeline_stable_diffusion_instantid import StableDiffusionInstantIDPipeline
from idgen.pipelines.pipeline_stable_diffusion_xl_instantid import InstantIDPipeline

__all__ = [
    "Arc2FacePipeline",
    "load_arc2face_pipeline",
    "FaceIDInpaintPipeline",
    "FaceIDInpaintXLPipeline",
    "FaceIDPipeline",
    "FaceRestorePipeline",
    "FaceSwapOutput",
    "FaceSwapPipeline",
    "FaceIDXLPipeline",
    "InstantIDInpaintPipeline",
    "InstantIDPipeline",
    "PVAInpaintPipeline",
    "PVAInpaintXLPipeline",
    "SVFRPipeline",
    "StableDiffusionInstantIDInpaintPipeline",
    "StableDiffusionInstantIDPipeline",
]
