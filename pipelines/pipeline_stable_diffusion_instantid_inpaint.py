"""InstantID identity inpainting with an SD1.5-architecture UNet and IdentityNet: diffusers'
`StableDiffusionControlNetInpaintPipeline` with InstantID's identity paths added through hooks
scoped to the call (`idgen.pipelines.instantid_common`); the IdentityNet condition as in
[`StableDiffusionXLInstantIDInpaintPipeline`].
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from diffusers import StableDiffusionControlNetInpaintPipeline
from diffusers.image_processor import PipelineImageInput

from idgen.identity import FaceEmbedsInput, ReferenceMode
from idgen.pipelines.instantid_common import (
    IDENTITY_END,
    IDENTITY_START,
    InstantIDInpaintMixin,
    StableDiffusionInstantIDComponents,
)


class StableDiffusionInstantIDInpaintPipeline(
    InstantIDInpaintMixin, StableDiffusionInstantIDComponents, StableDiffusionControlNetInpaintPipeline
):
    r"""InstantID identity inpainting with an SD1.5-architecture UNet and IdentityNet.

    Args:
        vae, text_encoder, tokenizer, unet, scheduler, safety_checker, feature_extractor,
        image_encoder, requires_safety_checker (default False): as in
        [`StableDiffusionControlNetInpaintPipeline`].
        controlnet ([`ControlNetModel`], list or [`MultiControlNetModel`], optional): the IdentityNet,
            or a list with it first and extra SD1.5 ControlNets; None is accepted (calling raises).
        identity_adapter ([`InstantIDAdapter`], optional), identity_scale (defaults to 0.8).
    """

    model_cpu_offload_seq = "text_encoder->identity_adapter->unet->vae"

    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[str, list[str]] = None,
        image: PipelineImageInput = None, mask_image: PipelineImageInput = None,
        control_image: Union[PipelineImageInput, list] = None,
        face_embeds: Optional[FaceEmbedsInput] = None, face_image=None, target_kps: Optional[np.ndarray] = None,
        identities: Optional[Sequence[Mapping[str, Any]]] = None, reference_mode: ReferenceMode = "mean",
        identity_scale: Optional[Union[float, dict]] = None, negative_noise: float = 0.0,
        identity_start: float = IDENTITY_START, identity_end: float = IDENTITY_END,
        height: Optional[int] = None, width: Optional[int] = None, padding_mask_crop: Optional[int] = None, strength: float = 1.0,
        negative_prompt: Optional[Union[str, list[str]]] = None,
        prompt_embeds: Optional[torch.Tensor] = None, negative_prompt_embeds: Optional[torch.Tensor] = None,
        ip_adapter_image: Optional[PipelineImageInput] = None, ip_adapter_image_embeds: Optional[list[torch.Tensor]] = None,
        controlnet_conditioning_scale: Union[float, list[float]] = 0.8, guess_mode: bool = False,
        control_guidance_start: Union[float, list[float]] = 0.0, control_guidance_end: Union[float, list[float]] = 1.0,
        num_inference_steps: int = 50, guidance_scale: float = 5.0,
        num_images_per_prompt: int = 1, eta: float = 0.0,
        generator: Optional[Union[torch.Generator, list[torch.Generator]]] = None, latents: Optional[torch.Tensor] = None,
        output_type: str = "pil", return_dict: bool = True, cross_attention_kwargs: Optional[dict[str, Any]] = None,
        clip_skip: Optional[int] = None, callback_on_step_end: Optional[Callable] = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        **kwargs,
    ):
        r"""Repaint the masked face of `image` as the person given by the identity inputs.

        The arguments (extra ControlNets' conditions in `control_image`, `ip_adapter_image` /
        `ip_adapter_image_embeds` for a style IP-Adapter loaded with `load_style_adapter`) behave
        as in [`StableDiffusionXLInstantIDInpaintPipeline.__call__`]; the
        text ones (`prompt_embeds`, `negative_prompt_embeds` `[B, 77, 768]`) and the rest as in
        [`StableDiffusionControlNetInpaintPipeline`].

        Returns:
            [`StableDiffusionPipelineOutput`] or `tuple`: images and the safety checker's flags.
        """
        arguments = {k: v for k, v in locals().items() if k not in ("self", "kwargs", "__class__")}
        return self._generate(super().__call__, arguments, kwargs)
