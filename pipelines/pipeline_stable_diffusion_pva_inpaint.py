"""Identity-preserving face inpainting with PVA on Stable Diffusion 1.5 / 2:
`StableDiffusionPVAInpaintPipeline` (formerly `PVAInpaintPipeline`).

diffusers' `StableDiffusionInpaintPipeline` plus a `pva_adapter` component; the call is
`idgen.pipelines.pva_common.PVAInpaintMixin`'s:

    >>> from idgen.pipelines import StableDiffusionPVAInpaintPipeline
    >>> pipe = StableDiffusionPVAInpaintPipeline.from_pretrained("path/to/stable-diffusion-2-inpainting")
    >>> pipe.load_pva("FPIP.bin")  # official file, or a saved pva_adapter/ folder
    >>> out = pipe("photo of a person", image=photo, mask_image=face_mask,
    ...            face_image=["ref1.jpg", "ref2.jpg"]).images[0]
"""

from __future__ import annotations

from typing import Optional, Union

from diffusers import AsymmetricAutoencoderKL, AutoencoderKL, StableDiffusionInpaintPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from idgen.adapters.pva import DEFAULT_IDENTITY_SCALE, PVAAdapter
from idgen.pipelines.pva_common import PVAInpaintMixin


class StableDiffusionPVAInpaintPipeline(PVAInpaintMixin, StableDiffusionInpaintPipeline):
    r"""PVA face inpainting on a Stable Diffusion (1.5 / 2) inpainting UNet (9 input channels; a
    4-channel UNet uses diffusers' latent-blend rule).

    Args: the components of `StableDiffusionInpaintPipeline`, plus
        pva_adapter ([`PVAAdapter`], optional): identity encoder + visual projections.
        identity_scale (`float`, defaults to 1): the default identity scale (`set_identity_scale`).
    """

    model_cpu_offload_seq = "text_encoder->pva_adapter->unet->vae"
    _optional_components = StableDiffusionInpaintPipeline._optional_components + ["pva_adapter"]

    def __init__(self, vae: Union[AutoencoderKL, AsymmetricAutoencoderKL], text_encoder: CLIPTextModel,
                 tokenizer: CLIPTokenizer, unet: UNet2DConditionModel, scheduler: KarrasDiffusionSchedulers,
                 safety_checker: Optional[StableDiffusionSafetyChecker] = None,
                 feature_extractor: Optional[CLIPImageProcessor] = None,
                 image_encoder: Optional[CLIPVisionModelWithProjection] = None, requires_safety_checker: bool = False,
                 pva_adapter: Optional[PVAAdapter] = None, identity_scale: float = DEFAULT_IDENTITY_SCALE):
        super().__init__(vae, text_encoder, tokenizer, unet, scheduler, safety_checker, feature_extractor,
                         image_encoder=image_encoder, requires_safety_checker=requires_safety_checker)
        self._register_pva(pva_adapter, identity_scale)


#: The name before diffusers' naming scheme; both work.
