"""InstantID as an architecture on Stable Diffusion 1.5: the same Resampler, decoupled identity
attention (16 cross-attentions -> checkpoint keys `ip_adapter.{1,3,...,31}`) and IdentityNet
(a ControlNet whose cross-attention context is the identity tokens; extra SD1.5 ControlNets may
follow it, as in the SDXL pipeline), at SD1.5 sizes
(cross-attention width 768). There are no official SD1.5 weights; idgen's trainer writes the same
file layout as the official SDXL `ip-adapter.bin`, which `load_instantid` reads. The denoising loop
is diffusers' `StableDiffusionControlNetPipeline.__call__` (`idgen.pipelines.instantid_common`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from diffusers.image_processor import PipelineImageInput
from diffusers.pipelines.controlnet.pipeline_controlnet import StableDiffusionControlNetPipeline
from diffusers.utils import replace_example_docstring

from idgen.identity import FaceEmbedsInput, ReferenceMode
from idgen.pipelines.instantid_common import (
    IDENTITY_END,
    IDENTITY_START,
    InstantIDText2ImageMixin,
    StableDiffusionInstantIDComponents,
)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import numpy as np
        >>> from diffusers import ControlNetModel
        >>> from idgen.pipelines import StableDiffusionInstantIDPipeline

        >>> controlnet = ControlNetModel.from_pretrained("my-sd15-identitynet")  # from idgen's trainer
        >>> pipe = StableDiffusionInstantIDPipeline.from_pretrained(
        ...     "stable-diffusion-v1-5/stable-diffusion-v1-5", controlnet=controlnet, safety_checker=None
        ... )
        >>> pipe.load_instantid("my-sd15-instantid/ip-adapter.bin")
        >>> image = pipe("photo of a person", face_embeds=np.load("arcface.npy"), image=kps_image).images[0]
        ```
"""


class StableDiffusionInstantIDPipeline(
    InstantIDText2ImageMixin, StableDiffusionInstantIDComponents, StableDiffusionControlNetPipeline
):
    r"""InstantID text-to-image with a Stable Diffusion 1.5 UNet and an SD1.5 IdentityNet.

    Args:
        vae ([`AutoencoderKL`]), text_encoder ([`CLIPTextModel`]), tokenizer ([`CLIPTokenizer`]),
        unet ([`UNet2DConditionModel`]), scheduler: as in [`StableDiffusionControlNetPipeline`].
        controlnet ([`ControlNetModel`], list or [`MultiControlNetModel`], optional): the SD1.5
            IdentityNet (its context is the identity tokens), or a list with it first and extra
            SD1.5 ControlNets (their context is the text). May be None; calling the pipeline then raises.
        identity_adapter ([`InstantIDAdapter`], optional): Resampler + identity key/value projections.
        safety_checker, feature_extractor (optional, default None), requires_safety_checker
            (default False), image_encoder: as in [`StableDiffusionControlNetPipeline`].
        identity_scale (`float` or block `dict`, defaults to 0.8): the default identity scale.
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->identity_adapter->unet->vae"

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: Union[str, list[str]] = None, image: Union[PipelineImageInput, list] = None,
        face_embeds: Optional[FaceEmbedsInput] = None, face_image=None, pose_image=None,
        control_mask: Optional[PipelineImageInput] = None,
        identities: Optional[Sequence[Mapping[str, Any]]] = None, reference_mode: ReferenceMode = "mean",
        identity_scale: Optional[Union[float, dict]] = None, negative_noise: float = 0.0,
        identity_start: float = IDENTITY_START, identity_end: float = IDENTITY_END,
        negative_prompt: Optional[Union[str, list[str]]] = None,
        prompt_embeds: Optional[torch.Tensor] = None, negative_prompt_embeds: Optional[torch.Tensor] = None,
        ip_adapter_image: Optional[PipelineImageInput] = None, ip_adapter_image_embeds: Optional[list[torch.Tensor]] = None,
        controlnet_conditioning_scale: Union[float, list[float]] = 0.8, guess_mode: bool = False,
        control_guidance_start: Union[float, list[float]] = 0.0, control_guidance_end: Union[float, list[float]] = 1.0,
        height: Optional[int] = None, width: Optional[int] = None,
        num_inference_steps: int = 30, timesteps: Optional[list[int]] = None, sigmas: Optional[list[float]] = None,
        guidance_scale: float = 5.0, num_images_per_prompt: int = 1, eta: float = 0.0,
        generator: Optional[Union[torch.Generator, list[torch.Generator]]] = None, latents: Optional[torch.Tensor] = None,
        output_type: str = "pil", return_dict: bool = True, cross_attention_kwargs: Optional[dict[str, Any]] = None,
        clip_skip: Optional[int] = None, callback_on_step_end: Optional[Callable] = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        **kwargs,
    ):
        r"""Generate images of the person (or people) given by the identity inputs.

        The identity arguments (`face_embeds`, `face_image`, `pose_image`, `identities`,
        `reference_mode`, `identity_scale`, `identity_start/end`, `negative_noise`), `image` (one
        condition per ControlNet with extra ControlNets), `control_mask`, `height`, `width`, the
        ControlNets' `controlnet_conditioning_scale` (defaults to 0.8), `control_guidance_start/end`
        and `ip_adapter_image` / `ip_adapter_image_embeds` (a style reference image for a standard
        IP-Adapter loaded with `load_style_adapter`, passed to diffusers untouched) behave exactly
        as in [`StableDiffusionXLInstantIDPipeline.__call__`]; the text arguments (`prompt_embeds`,
        `negative_prompt_embeds` `[B, 77, 768]`) and the rest as in
        [`StableDiffusionControlNetPipeline`].

        Examples:

        Returns:
            [`StableDiffusionPipelineOutput`] or `tuple`: images and the safety checker's flags
            (None without a safety checker).
        """
        arguments = {k: v for k, v in locals().items() if k not in ("self", "kwargs", "__class__")}
        return self._generate(super().__call__, arguments, kwargs)
