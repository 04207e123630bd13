"""IP-Adapter-FaceID / FaceID-Plus on Stable Diffusion XL: `StableDiffusionXLFaceIDPipeline`."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from diffusers import StableDiffusionXLPipeline

from idgen.adapters.faceid.loader import ScaleConfig
from idgen.identity import FaceEmbedsInput, ReferenceMode
from idgen.pipelines.faceid_common import FaceIDPipelineMixin


class StableDiffusionXLFaceIDPipeline(FaceIDPipelineMixin, StableDiffusionXLPipeline):
    r"""IP-Adapter-FaceID / FaceID-Plus on Stable Diffusion XL (`ip-adapter-faceid_sdxl.bin`: 4
    tokens of width 2048). Same identity API as [`StableDiffusionFaceIDPipeline`]; components and
    `__init__` as [`StableDiffusionXLPipeline`] (two text encoders and tokenizers, optional
    `image_encoder` for Plus).

    Examples:
        ```py
        >>> from idgen.pipelines import StableDiffusionXLFaceIDPipeline

        >>> pipe = StableDiffusionXLFaceIDPipeline.from_pretrained("path/to/sdxl")
        >>> pipe.load_faceid("ip-adapter-faceid_sdxl.bin")
        >>> image = pipe("photo of a woman in a garden", face_image="me.jpg").images[0]
        ```
    """

    @torch.no_grad()
    def __call__(
        self, prompt: Union[str, list[str], None] = None, face_embeds: Optional[FaceEmbedsInput] = None,
        face_image=None, *, prompt_2: Union[str, list[str], None] = None,
        identities: Optional[Sequence[Mapping[str, Any]]] = None, face_crop=None,
        clip_image_embeds: Optional[torch.Tensor] = None, negative_clip_image_embeds: Optional[torch.Tensor] = None,
        reference_mode: Optional[ReferenceMode] = None,
        identity_scale: Optional[ScaleConfig] = None, identity_start: float = 0.0, identity_end: float = 1.0,
        negative_noise: float = 0.0, s_scale: Optional[float] = None, shortcut: Optional[bool] = None,
        face_analyzer=None, height: Optional[int] = None, width: Optional[int] = None,
        num_inference_steps: int = 30, timesteps: Optional[list[int]] = None, sigmas: Optional[list[float]] = None,
        denoising_end: Optional[float] = None, guidance_scale: float = 5.0,
        negative_prompt: Union[str, list[str], None] = None, negative_prompt_2: Union[str, list[str], None] = None,
        num_images_per_prompt: int = 1, eta: float = 0.0,
        generator: Union[torch.Generator, list[torch.Generator], None] = None, latents: Optional[torch.Tensor] = None,
        prompt_embeds: Optional[torch.Tensor] = None, negative_prompt_embeds: Optional[torch.Tensor] = None,
        pooled_prompt_embeds: Optional[torch.Tensor] = None,
        negative_pooled_prompt_embeds: Optional[torch.Tensor] = None, output_type: str = "pil",
        return_dict: bool = True, cross_attention_kwargs: Optional[dict[str, Any]] = None,
        guidance_rescale: float = 0.0, original_size: Optional[tuple[int, int]] = None,
        crops_coords_top_left: tuple[int, int] = (0, 0), target_size: Optional[tuple[int, int]] = None,
        negative_original_size: Optional[tuple[int, int]] = None,
        negative_crops_coords_top_left: tuple[int, int] = (0, 0),
        negative_target_size: Optional[tuple[int, int]] = None, clip_skip: Optional[int] = None,
        callback_on_step_end: Optional[Callable] = None, callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        **kwargs,
    ):
        r"""The SDXL twin of [`StableDiffusionFaceIDPipeline.__call__`]: the same identity arguments
        ([`FaceIDPipelineMixin`]), 30 steps and CFG 5.0 by default (official `generate`), the
        others [`StableDiffusionXLPipeline`]'s, pooled prompt embeddings included.
        """
        return self._generate(locals())
