"""Identity-preserving face inpainting with PVA on SDXL: `StableDiffusionXLPVAInpaintPipeline`
(formerly `PVAInpaintXLPipeline`).

diffusers' `StableDiffusionXLInpaintPipeline` plus a `pva_adapter` component; identity tokens
have the 2048 text width. The call is `idgen.pipelines.pva_common.PVAInpaintMixin`'s.
"""

from __future__ import annotations

from typing import Optional

from diffusers import AutoencoderKL, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import (CLIPImageProcessor, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer,
                          CLIPVisionModelWithProjection)

from idgen.adapters.pva import DEFAULT_IDENTITY_SCALE, PVAAdapter
from idgen.pipelines.pva_common import PVAInpaintMixin


class StableDiffusionXLPVAInpaintPipeline(PVAInpaintMixin, StableDiffusionXLInpaintPipeline):
    r"""PVA face inpainting on an SDXL inpainting UNet.

    Args: the components of `StableDiffusionXLInpaintPipeline`, plus
        pva_adapter ([`PVAAdapter`], optional): identity encoder + visual projections.
        identity_scale (`float`, defaults to 1): the default identity scale (`set_identity_scale`).
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->pva_adapter->unet->vae"
    _optional_components = StableDiffusionXLInpaintPipeline._optional_components + ["pva_adapter"]

    def __init__(self, vae: AutoencoderKL, text_encoder: CLIPTextModel, text_encoder_2: CLIPTextModelWithProjection,
                 tokenizer: CLIPTokenizer, tokenizer_2: CLIPTokenizer, unet: UNet2DConditionModel,
                 scheduler: KarrasDiffusionSchedulers, image_encoder: Optional[CLIPVisionModelWithProjection] = None,
                 feature_extractor: Optional[CLIPImageProcessor] = None, requires_aesthetics_score: bool = False,
                 force_zeros_for_empty_prompt: bool = True, add_watermarker: Optional[bool] = None,
                 pva_adapter: Optional[PVAAdapter] = None, identity_scale: float = DEFAULT_IDENTITY_SCALE):
        super().__init__(vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, unet, scheduler,
                         image_encoder=image_encoder, feature_extractor=feature_extractor,
                         requires_aesthetics_score=requires_aesthetics_score,
                         force_zeros_for_empty_prompt=force_zeros_for_empty_prompt, add_watermarker=add_watermarker)
        self._register_pva(pva_adapter, identity_scale)


#: The name before diffusers' naming scheme; both work.
