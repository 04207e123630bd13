"""Old module of the PVA inpainting pipelines, kept as a re-export for its importers
(`idgen.pipelines.pipeline_face_swap`): the classes live in
`pipeline_stable_diffusion_pva_inpaint` and `pipeline_stable_diffusion_xl_pva_inpaint`."""

from idgen.pipelines.pipeline_stable_diffusion_pva_inpaint import PVAInpaintPipeline, StableDiffusionPVAInpaintPipeline
from idgen.pipelines.pipeline_stable_diffusion_xl_pva_inpaint import (PVAInpaintXLPipeline,
                                                                       StableDiffusionXLPVAInpaintPipeline)

__all__ = ["PVAInpaintPipeline", "PVAInpaintXLPipeline", "StableDiffusionPVAInpaintPipeline",
           "StableDiffusionXLPVAInpaintPipeline"]
