"""InstantID identity inpainting on SDXL: diffusers' `StableDiffusionXLControlNetInpaintPipeline`
(its denoising loop, masking rule, `strength`, `padding_mask_crop`, schedulers and callbacks) with
InstantID's two identity paths added through hooks scoped to the call
(`idgen.pipelines.instantid_common`). The IdentityNet is fed the keypoints of the face being
repainted: detected in `image` (the face that overlaps the mask most), or given as `target_kps`,
or a ready `control_image`. Extra ControlNets (depth, canny...) may follow the IdentityNet, as
in [`StableDiffusionXLInstantIDPipeline`]: `control_image` is then one condition per ControlNet.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from diffusers import StableDiffusionXLControlNetInpaintPipeline
from diffusers.image_processor import PipelineImageInput

from idgen.identity import FaceEmbedsInput, ReferenceMode
from idgen.pipelines.instantid_common import (
    IDENTITY_END,
    IDENTITY_START,
    InstantIDInpaintMixin,
    StableDiffusionXLInstantIDComponents,
)


class StableDiffusionXLInstantIDInpaintPipeline(
    InstantIDInpaintMixin, StableDiffusionXLInstantIDComponents, StableDiffusionXLControlNetInpaintPipeline
):
    r"""InstantID identity inpainting on SDXL (an SDXL inpainting UNet, 9 channels, or a base UNet
    with diffusers' latent-blend rule) with the IdentityNet.

    Args:
        vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, unet, scheduler,
        force_zeros_for_empty_prompt, add_watermarker, feature_extractor, image_encoder: as in
            [`StableDiffusionXLControlNetInpaintPipeline`]; its `requires_aesthetics_score` must stay
            False (an SDXL refiner option).
        controlnet ([`ControlNetModel`], list or [`MultiControlNetModel`], optional): the IdentityNet,
            or a list with it first and extra ControlNets (context: the text); None is accepted
            (calling raises).
        identity_adapter ([`InstantIDAdapter`], optional), identity_scale (defaults to 0.8): as in
            [`StableDiffusionXLInstantIDPipeline`].
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->identity_adapter->unet->vae"

    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[str, list[str]] = None, prompt_2: Optional[Union[str, list[str]]] = None,
        image: PipelineImageInput = None, mask_image: PipelineImageInput = None,
        control_image: Union[PipelineImageInput, list] = None,
        face_embeds: Optional[FaceEmbedsInput] = None, face_image=None, target_kps: Optional[np.ndarray] = None,
        identities: Optional[Sequence[Mapping[str, Any]]] = None, reference_mode: ReferenceMode = "mean",
        identity_scale: Optional[Union[float, dict]] = None, negative_noise: float = 0.0,
        identity_start: float = IDENTITY_START, identity_end: float = IDENTITY_END,
        height: Optional[int] = None, width: Optional[int] = None, padding_mask_crop: Optional[int] = None,
        negative_prompt: Optional[Union[str, list[str]]] = None, negative_prompt_2: Optional[Union[str, list[str]]] = None,
        prompt_embeds: Optional[torch.Tensor] = None, negative_prompt_embeds: Optional[torch.Tensor] = None,
        pooled_prompt_embeds: Optional[torch.Tensor] = None, negative_pooled_prompt_embeds: Optional[torch.Tensor] = None,
        ip_adapter_image: Optional[PipelineImageInput] = None, ip_adapter_image_embeds: Optional[list[torch.Tensor]] = None,
        controlnet_conditioning_scale: Union[float, list[float]] = 0.8, guess_mode: bool = False,
        control_guidance_start: Union[float, list[float]] = 0.0, control_guidance_end: Union[float, list[float]] = 1.0,
        strength: float = 0.9999, num_inference_steps: int = 50, denoising_start: Optional[float] = None,
        denoising_end: Optional[float] = None, guidance_scale: float = 5.0, guidance_rescale: float = 0.0,
        num_images_per_prompt: int = 1, eta: float = 0.0,
        generator: Optional[Union[torch.Generator, list[torch.Generator]]] = None, latents: Optional[torch.Tensor] = None,
        output_type: str = "pil", return_dict: bool = True, cross_attention_kwargs: Optional[dict[str, Any]] = None,
        original_size: Optional[tuple[int, int]] = None, crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: Optional[tuple[int, int]] = None, aesthetic_score: float = 6.0, negative_aesthetic_score: float = 2.5,
        clip_skip: Optional[int] = None, callback_on_step_end: Optional[Callable] = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        **kwargs,
    ):
        r"""Repaint the masked face of `image` as the person given by the identity inputs.

        Args:
            image, mask_image (white = repaint): the photo and the region to repaint; or lists of
                B photos (of one size) and their masks, repainted as the one person in one batch
                (a list of B prompts; `generator` a list of B for per-photo noise).
            control_image: a ready keypoint image (same size as `image`; a list of B); else drawn
                from `target_kps` ([5, 2] pixels of `image`; `[B, 5, 2]` with B photos), else from
                the face detected under each mask. With extra ControlNets: a list with one condition
                per ControlNet, the IdentityNet's first (None: drawn as above), all resized to the
                photo's size (one photo per call then).
            face_embeds, face_image, identities, reference_mode, identity_scale, negative_noise,
                identity_start, identity_end: the identity, as in
                [`StableDiffusionXLInstantIDPipeline.__call__`] (old names `ip_adapter_scale`,
                `identity_guidance_start/end` warn).
            controlnet_conditioning_scale: the IdentityNet scale (official default 0.8), or one per
                ControlNet; control_guidance_start/end: a number or one per ControlNet; guidance_scale
                defaults to 5.0 (official).
            ip_adapter_image, ip_adapter_image_embeds: a style reference image for a standard
                IP-Adapter loaded with `load_style_adapter` (or its embeddings); passed to diffusers
                untouched.
            The rest (`strength`, `padding_mask_crop`, `prompt_embeds` `[B, 77, 2048]`, ...): as in
                [`StableDiffusionXLControlNetInpaintPipeline`].

        Returns:
            [`StableDiffusionXLPipelineOutput`] or `tuple`: the repainted images.
        """
        arguments = {k: v for k, v in locals().items() if k not in ("self", "kwargs", "__class__")}
        return self._generate(super().__call__, arguments, kwargs)
