"""idgen's diffusers pipelines (importable as `idgen.pipelines`), one class a file, named in
diffusers' scheme (`StableDiffusion[XL]<Method>[Inpaint]Pipeline`).

- `StableDiffusionXLInstantIDPipeline` and `StableDiffusionInstantIDPipeline` (the SD1.5
  architecture): IdentityNet ControlNet + Resampler identity tokens, official `ip-adapter.bin`.
- `StableDiffusionXLInstantIDImg2ImgPipeline`: InstantID img2img (init image + `strength`).
- `StableDiffusionFaceIDPipeline` / `StableDiffusionXLFaceIDPipeline`: IP-Adapter-FaceID and
  FaceID-Plus (v2), official files with their LoRA.
- `StableDiffusionXLPuLIDPipeline`: PuLID v1 / v1.1 (ID encoder on ArcFace + EVA-CLIP features, ID
  attention), official `pulid_*.safetensors` / `.bin` and EVA02-CLIP-L-336 files.
- `Arc2FacePipeline` (SD1.5): the ArcFace embedding injected into the CLIP text encoder's input.
- Identity inpainting: `StableDiffusion[XL]PVAInpaintPipeline` (PVA),
  `StableDiffusion[XL]FaceIDInpaintPipeline`, `StableDiffusion[XL]InstantIDInpaintPipeline`.
- `FaceSwapper`: align, mask, inpaint with one of those, colour-match, paste back (an editor over
  a pipeline, not a pipeline).
- `FaceRestorePipeline`: blind face restoration through a restoration ControlNet (SD1.5);
  `SVFRPipeline` (+ `load_svfr_pipeline`): SVFR video face restoration on Stable Video Diffusion.

The names before diffusers' scheme (`InstantIDPipeline`, `FaceIDPipeline`, ...; see `RENAMED`)
still work until idgen 0.2, with a FutureWarning.
"""

from idgen.deprecation import renamed_attributes
from idgen.pipelines.pipeline_arc2face import Arc2FacePipeline, load_arc2face_pipeline
from idgen.pipelines.pipeline_face_restore import FaceRestorePipeline
from idgen.pipelines.pipeline_face_swap import FaceSwapOutput, FaceSwapper
from idgen.pipelines.pipeline_stable_diffusion_faceid import StableDiffusionFaceIDPipeline
from idgen.pipelines.pipeline_stable_diffusion_faceid_inpaint import StableDiffusionFaceIDInpaintPipeline
from idgen.pipelines.pipeline_stable_diffusion_instantid import StableDiffusionInstantIDPipeline
from idgen.pipelines.pipeline_stable_diffusion_instantid_inpaint import StableDiffusionInstantIDInpaintPipeline
from idgen.pipelines.pipeline_stable_diffusion_pva_inpaint import StableDiffusionPVAInpaintPipeline
from idgen.pipelines.pipeline_stable_diffusion_xl_faceid import StableDiffusionXLFaceIDPipeline
from idgen.pipelines.pipeline_stable_diffusion_xl_faceid_inpaint import StableDiffusionXLFaceIDInpaintPipeline
from idgen.pipelines.pipeline_stable_diffusion_xl_instantid import StableDiffusionXLInstantIDPipeline
from idgen.pipelines.pipeline_stable_diffusion_xl_instantid_img2img import StableDiffusionXLInstantIDImg2ImgPipeline
from idgen.pipelines.pipeline_stable_diffusion_xl_instantid_inpaint import StableDiffusionXLInstantIDInpaintPipeline
from idgen.pipelines.pipeline_stable_diffusion_xl_pulid import StableDiffusionXLPuLIDPipeline
from idgen.pipelines.pipeline_stable_diffusion_xl_pva_inpaint import StableDiffusionXLPVAInpaintPipeline
from idgen.pipelines.pipeline_svfr import SVFRPipeline, load_svfr_pipeline

#: Old name -> new name, served with a FutureWarning until idgen 0.2.
RENAMED = {
    "InstantIDPipeline": "StableDiffusionXLInstantIDPipeline",
    "InstantIDInpaintPipeline": "StableDiffusionXLInstantIDInpaintPipeline",
    "FaceIDPipeline": "StableDiffusionFaceIDPipeline",
    "FaceIDXLPipeline": "StableDiffusionXLFaceIDPipeline",
    "FaceIDInpaintPipeline": "StableDiffusionFaceIDInpaintPipeline",
    "FaceIDInpaintXLPipeline": "StableDiffusionXLFaceIDInpaintPipeline",
    "PVAInpaintPipeline": "StableDiffusionPVAInpaintPipeline",
    "PVAInpaintXLPipeline": "StableDiffusionXLPVAInpaintPipeline",
    "FaceSwapPipeline": "FaceSwapper",
}
__getattr__ = renamed_attributes(__name__, globals(), RENAMED)

__all__ = [
    "Arc2FacePipeline",
    "FaceRestorePipeline",
    "FaceSwapOutput",
    "FaceSwapper",
    "SVFRPipeline",
    "StableDiffusionFaceIDInpaintPipeline",
    "StableDiffusionFaceIDPipeline",
    "StableDiffusionInstantIDInpaintPipeline",
    "StableDiffusionInstantIDPipeline",
    "StableDiffusionPVAInpaintPipeline",
    "StableDiffusionXLFaceIDInpaintPipeline",
    "StableDiffusionXLFaceIDPipeline",
    "StableDiffusionXLInstantIDImg2ImgPipeline",
    "StableDiffusionXLInstantIDInpaintPipeline",
    "StableDiffusionXLInstantIDPipeline",
    "StableDiffusionXLPVAInpaintPipeline",
    "StableDiffusionXLPuLIDPipeline",
    "load_arc2face_pipeline",
    "load_svfr_pipeline",
]
