"""IP-Adapter-FaceID / FaceID-Plus (v1, v2) on Stable Diffusion 1.5: `StableDiffusionFaceIDPipeline`."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import replace_example_docstring

from idgen.adapters.faceid.loader import ScaleConfig
from idgen.identity import FaceEmbedsInput, ReferenceMode
from idgen.pipelines.faceid_common import StableDiffusionFaceIDMixin

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from idgen.face import get_face_analyzer
        >>> from idgen.pipelines import StableDiffusionFaceIDPipeline

        >>> pipe = StableDiffusionFaceIDPipeline.from_pretrained("path/to/sd15", torch_dtype=torch.float16)
        >>> pipe.load_faceid("ip-adapter-faceid_sd15.bin")  # the LoRA inside is applied too
        >>> pipe.to("cuda")
        >>> face = get_face_analyzer().get("me.jpg", select="largest")
        >>> image = pipe(
        ...     "photo of a woman in red dress in a garden",
        ...     face_embeds=face,  # or face_image="me.jpg", or a [N, 512] array of normed embeddings
        ...     negative_prompt="monochrome, lowres, bad anatomy, worst quality, low quality",
        ...     generator=torch.Generator("cpu").manual_seed(2023),
        ... ).images[0]

        >>> # FaceID-Plus v2: also needs the CLIP ViT-H image encoder; the aligned face crop is made
        >>> # from the photo's keypoints and shortcut=True is set for you.
        >>> from transformers import CLIPVisionModelWithProjection
        >>> encoder = CLIPVisionModelWithProjection.from_pretrained("path/to/CLIP-ViT-H-14")
        >>> pipe.load_faceid("ip-adapter-faceid-plusv2_sd15.bin", image_encoder=encoder)
        >>> image = pipe("photo of a woman", face_image="me.jpg", s_scale=1.0).images[0]
        ```
"""


class StableDiffusionFaceIDPipeline(StableDiffusionFaceIDMixin, StableDiffusionPipeline):
    r"""IP-Adapter-FaceID / FaceID-Plus (v1, v2) on Stable Diffusion 1.5.

    A [`StableDiffusionPipeline`] with `load_faceid` / `set_faceid_scale` / `unload_faceid` and a
    `__call__` that takes the identity. The adapter lives in the UNet, so a pipeline sharing it
    (from `pipe.components`, `from_pipe`, another VAE) has it too.

    Args:
        vae (`AutoencoderKL`): image <-> latents.
        text_encoder (`CLIPTextModel`), tokenizer (`CLIPTokenizer`): the prompt.
        unet (`UNet2DConditionModel`): the denoiser; `load_faceid` adds the identity projection
            (`unet.encoder_hid_proj`), IP attention processors and the `"faceid"` LoRA to it.
        scheduler: any diffusers scheduler.
        safety_checker, feature_extractor: optional (`feature_extractor` also preprocesses the Plus
            face crop; made for you when missing).
        image_encoder (`CLIPVisionModelWithProjection`, optional): FaceID-Plus's CLIP ViT-H.
    """

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self, prompt: Union[str, list[str], None] = None, face_embeds: Optional[FaceEmbedsInput] = None,
        face_image=None, *, identities: Optional[Sequence[Mapping[str, Any]]] = None, face_crop=None,
        clip_image_embeds: Optional[torch.Tensor] = None, negative_clip_image_embeds: Optional[torch.Tensor] = None,
        reference_mode: Optional[ReferenceMode] = None, identity_scale: Optional[ScaleConfig] = None,
        identity_start: float = 0.0, identity_end: float = 1.0, negative_noise: float = 0.0,
        s_scale: Optional[float] = None, shortcut: Optional[bool] = None, face_analyzer=None,
        height: Optional[int] = None, width: Optional[int] = None, num_inference_steps: int = 30,
        timesteps: Optional[list[int]] = None, sigmas: Optional[list[float]] = None, guidance_scale: float = 7.5,
        negative_prompt: Union[str, list[str], None] = None, num_images_per_prompt: int = 1, eta: float = 0.0,
        generator: Union[torch.Generator, list[torch.Generator], None] = None, latents: Optional[torch.Tensor] = None,
        prompt_embeds: Optional[torch.Tensor] = None, negative_prompt_embeds: Optional[torch.Tensor] = None,
        output_type: str = "pil", return_dict: bool = True, cross_attention_kwargs: Optional[dict[str, Any]] = None,
        guidance_rescale: float = 0.0, clip_skip: Optional[int] = None,
        callback_on_step_end: Optional[Callable] = None, callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        **kwargs,
    ):
        r"""Images of the person (or people) of the identity arguments.

        The identity arguments (`face_embeds` ... `face_analyzer`) are described in
        [`FaceIDPipelineMixin`]; `num_inference_steps` and `guidance_scale` default to 30 and 7.5
        as in the official `generate`; the others are [`StableDiffusionPipeline`]'s (`kwargs`:
        old argument names, one release).

        Examples:

        Returns:
            [`StableDiffusionPipelineOutput`] or a tuple with `return_dict=False`.
        """
        return self._generate(locals())
