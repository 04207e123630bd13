"""IP-Adapter-FaceID identity inpainting on Stable Diffusion 1.5: `StableDiffusionFaceIDInpaintPipeline`."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from diffusers import StableDiffusionInpaintPipeline
from diffusers.image_processor import PipelineImageInput

from idgen.adapters.faceid.loader import ScaleConfig
from idgen.identity import FaceEmbedsInput, ReferenceMode
from idgen.pipelines.faceid_common import StableDiffusionFaceIDMixin


class StableDiffusionFaceIDInpaintPipeline(StableDiffusionFaceIDMixin, StableDiffusionInpaintPipeline):
    r"""IP-Adapter-FaceID identity inpainting on a Stable Diffusion 1.5 inpainting UNet (9 input
    channels; a 4-channel UNet uses diffusers' latent-blend rule). Components as
    [`StableDiffusionFaceIDPipeline`].

    Examples:
        ```py
        >>> from idgen.pipelines import StableDiffusionFaceIDInpaintPipeline

        >>> pipe = StableDiffusionFaceIDInpaintPipeline.from_pretrained("path/to/sd15-inpainting")
        >>> pipe.load_faceid("ip-adapter-faceid_sd15.bin")
        >>> out = pipe("photo of a person", image=photo, mask_image=face_mask, face_image="me.jpg").images[0]
        ```
    """

    @torch.no_grad()
    def __call__(
        self, prompt: Union[str, list[str], None] = None, image: PipelineImageInput = None,
        mask_image: PipelineImageInput = None, face_embeds: Optional[FaceEmbedsInput] = None, face_image=None, *,
        identities: Optional[Sequence[Mapping[str, Any]]] = None, face_crop=None,
        clip_image_embeds: Optional[torch.Tensor] = None,
        negative_clip_image_embeds: Optional[torch.Tensor] = None, reference_mode: Optional[ReferenceMode] = None,
        identity_scale: Optional[ScaleConfig] = None, identity_start: float = 0.0, identity_end: float = 1.0,
        negative_noise: float = 0.0, s_scale: Optional[float] = None, shortcut: Optional[bool] = None,
        face_analyzer=None, masked_image_latents: Optional[torch.Tensor] = None, height: Optional[int] = None,
        width: Optional[int] = None, padding_mask_crop: Optional[int] = None, strength: float = 1.0,
        num_inference_steps: int = 30, timesteps: Optional[list[int]] = None, sigmas: Optional[list[float]] = None,
        guidance_scale: float = 7.5, negative_prompt: Union[str, list[str], None] = None,
        num_images_per_prompt: int = 1, eta: float = 0.0,
        generator: Union[torch.Generator, list[torch.Generator], None] = None, latents: Optional[torch.Tensor] = None,
        prompt_embeds: Optional[torch.Tensor] = None, negative_prompt_embeds: Optional[torch.Tensor] = None,
        output_type: str = "pil", return_dict: bool = True,
        cross_attention_kwargs: Optional[dict[str, Any]] = None, clip_skip: Optional[int] = None,
        callback_on_step_end: Optional[Callable] = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"], **kwargs,
    ):
        r"""Inpaint `mask_image` of `image` (white = repaint) with the person of the identity arguments.

        The identity arguments (`face_embeds` ... `face_analyzer`) are those of
        [`StableDiffusionFaceIDPipeline`] (see [`FaceIDPipelineMixin`]); the others, `strength`
        and `padding_mask_crop` included, are [`StableDiffusionInpaintPipeline`]'s, with 30 steps
        and CFG 7.5 by default.

        Returns:
            [`StableDiffusionPipelineOutput`] or a tuple with `return_dict=False`.
        """
        return self._generate(locals())
