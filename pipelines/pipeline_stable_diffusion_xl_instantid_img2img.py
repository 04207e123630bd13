"""InstantID img2img on SDXL: diffusers' `StableDiffusionXLControlNetImg2ImgPipeline` (its
`strength` rule, schedulers and callbacks) with InstantID's identity paths added through hooks
scoped to the call (`idgen.pipelines.instantid_common`).

Same semantics and math as the official `pipeline_stable_diffusion_xl_instantid_img2img.py`:
`image` is the init image, `control_image` the IdentityNet's keypoint image, `strength` how much
of the init image is re-noised; the output has the init image's size. The parity case is in
`tests/test_instantid_img2img.py`. Extra ControlNets (depth, canny...) may follow the IdentityNet,
as in [`StableDiffusionXLInstantIDPipeline`].
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import PIL.Image
import torch
from diffusers import StableDiffusionXLControlNetImg2ImgPipeline
from diffusers.image_processor import PipelineImageInput

from idgen.errors import IdgenError
from idgen.identity import FaceEmbedsInput, ReferenceMode
from idgen.pipelines.instantid_common import (
    IDENTITY_END,
    IDENTITY_START,
    InstantIDPipelineMixin,
    StableDiffusionXLInstantIDComponents,
    draw_target_kps,
    kps_per_photo,
    load_photos,
)


class StableDiffusionXLInstantIDImg2ImgPipeline(
    InstantIDPipelineMixin, StableDiffusionXLInstantIDComponents, StableDiffusionXLControlNetImg2ImgPipeline
):
    r"""InstantID img2img with Stable Diffusion XL: the init image re-noised by `strength` and
    denoised towards the person given by the identity inputs, posed by the IdentityNet.

    Args:
        vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, unet, scheduler,
        force_zeros_for_empty_prompt, add_watermarker, feature_extractor, image_encoder: as in
            [`StableDiffusionXLControlNetImg2ImgPipeline`] (`requires_aesthetics_score` stays False).
        controlnet ([`ControlNetModel`], list or [`MultiControlNetModel`], optional): the IdentityNet,
            or a list with it first and extra ControlNets (context: the text); None is accepted
            (calling raises).
        identity_adapter ([`InstantIDAdapter`], optional), identity_scale (defaults to 0.8): as in
            [`StableDiffusionXLInstantIDPipeline`].
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->image_encoder->identity_adapter->unet->vae"
    identity_arguments = InstantIDPipelineMixin.identity_arguments + ("target_kps", "control_mask")

    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[str, list[str]] = None, prompt_2: Optional[Union[str, list[str]]] = None,
        image: PipelineImageInput = None, control_image: Union[PipelineImageInput, list] = None,
        strength: float = 0.8,
        face_embeds: Optional[FaceEmbedsInput] = None, face_image=None, target_kps: Optional[np.ndarray] = None,
        control_mask: Optional[PipelineImageInput] = None,
        identities: Optional[Sequence[Mapping[str, Any]]] = None, reference_mode: ReferenceMode = "mean",
        identity_scale: Optional[Union[float, dict]] = None, negative_noise: float = 0.0,
        identity_start: float = IDENTITY_START, identity_end: float = IDENTITY_END,
        height: Optional[int] = None, width: Optional[int] = None,
        num_inference_steps: int = 30, guidance_scale: float = 5.0,
        negative_prompt: Optional[Union[str, list[str]]] = None, negative_prompt_2: Optional[Union[str, list[str]]] = None,
        num_images_per_prompt: int = 1, eta: float = 0.0,
        generator: Optional[Union[torch.Generator, list[torch.Generator]]] = None, latents: Optional[torch.Tensor] = None,
        prompt_embeds: Optional[torch.Tensor] = None, negative_prompt_embeds: Optional[torch.Tensor] = None,
        pooled_prompt_embeds: Optional[torch.Tensor] = None, negative_pooled_prompt_embeds: Optional[torch.Tensor] = None,
        ip_adapter_image: Optional[PipelineImageInput] = None, ip_adapter_image_embeds: Optional[list[torch.Tensor]] = None,
        output_type: str = "pil", return_dict: bool = True, cross_attention_kwargs: Optional[dict[str, Any]] = None,
        controlnet_conditioning_scale: Union[float, list[float]] = 0.8, guess_mode: bool = False,
        control_guidance_start: Union[float, list[float]] = 0.0, control_guidance_end: Union[float, list[float]] = 1.0,
        original_size: Optional[tuple[int, int]] = None, crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: Optional[tuple[int, int]] = None, negative_original_size: Optional[tuple[int, int]] = None,
        negative_crops_coords_top_left: tuple[int, int] = (0, 0), negative_target_size: Optional[tuple[int, int]] = None,
        aesthetic_score: float = 6.0, negative_aesthetic_score: float = 2.5,
        clip_skip: Optional[int] = None, callback_on_step_end: Optional[Callable] = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        **kwargs,
    ):
        r"""Turn `image` into an image of the person given by the identity inputs.

        Args:
            image: the init image (a photo: PIL, path, `[H, W, 3]` uint8; or a list of B photos of
                one size with a list of B prompts). The output has its size (rounded down to a
                multiple of the VAE factor) unless `height`/`width` are given.
            control_image: the IdentityNet's keypoint image; if omitted, drawn at the init image's
                size from `target_kps` (`[5, 2]` pixels of `image`; `[B, 5, 2]` for B photos), else
                from the largest face detected in `image` (`pipe.face_analyzer`). With extra
                ControlNets: a list with one condition per ControlNet, the IdentityNet's first
                (None: drawn as above), all resized to the output size (one photo per call then).
            strength (defaults to 0.8, official): how far the init image is re-noised; 1.0 ignores
                it, and `int(num_inference_steps * strength)` steps run.
            face_embeds, face_image, identities, reference_mode, identity_scale, negative_noise,
                identity_start, identity_end, control_mask: as in
                [`StableDiffusionXLInstantIDPipeline.__call__`].
            ip_adapter_image, ip_adapter_image_embeds: a style reference image for a standard
                IP-Adapter loaded with `load_style_adapter` (or its embeddings); passed to diffusers
                untouched.
            controlnet_conditioning_scale: the IdentityNet scale (defaults to 0.8), or one per
                ControlNet; control_guidance_start/end: a number or one per ControlNet.
            The rest (`prompt_embeds` `[B, 77, 2048]`, `aesthetic_score`, ...): as in
                [`StableDiffusionXLControlNetImg2ImgPipeline`] (30 steps, guidance 5.0 by default).

        Returns:
            [`StableDiffusionXLPipelineOutput`] or `tuple`: the images.
        """
        arguments = {k: v for k, v in locals().items() if k not in ("self", "kwargs", "__class__")}
        return self._generate(super().__call__, arguments, kwargs)

    def _generate(self, pipeline_call: Callable, arguments: dict, deprecated: dict):
        """The body of `__call__`: `arguments` are all its named arguments, `deprecated` its `**kwargs`."""
        identity, call = self.split_arguments(arguments, deprecated)
        self.check_identity_inputs(height=call["height"], width=call["width"], **identity)
        if call["image"] is None:
            raise IdgenError("img2img needs `image`, the init image.")
        photos, batched = load_photos(call["image"])
        call["image"] = [PIL.Image.fromarray(p) for p in photos] if batched else PIL.Image.fromarray(photos[0])
        keypoints, extras = self.split_conditions(call["control_image"], "control_image")
        if extras and batched:
            raise IdgenError("a batch of init images works with the IdentityNet alone; diffusers takes one condition "
                             "image per extra ControlNet. Give one init image per call.")
        people = self.resolve_identities(
            identity["face_embeds"], identity["face_image"], identity["identities"], identity["reference_mode"]
        )
        if keypoints is None:
            kps = kps_per_photo(identity["target_kps"], len(photos), batched)
            if len(kps) != len(photos):
                raise IdgenError(f"{len(photos)} init images need as many `target_kps` ([B, 5, 2]); got {len(kps)}.")
            controls = [self.init_image_keypoints(photo, each) for photo, each in zip(photos, kps)]
            keypoints = controls if batched else controls[0]
        elif identity["target_kps"] is not None:
            raise IdgenError("Give either a keypoint `control_image` or `target_kps`, not both.")
        first = call["image"][0] if batched else call["image"]
        call["height"], call["width"] = self.image_processor.get_default_height_width(first, call["height"], call["width"])
        call["control_image"] = self.join_conditions(keypoints, extras)
        return self._call_with_identity(pipeline_call, people, identity, call)

    def init_image_keypoints(self, photo: np.ndarray, target_kps: Optional[np.ndarray]) -> PIL.Image.Image:
        """The IdentityNet condition at the size of `photo` (`[H, W, 3]` uint8): `target_kps`, else
        the keypoints of the largest face detected in it."""
        if target_kps is None:
            target_kps = self._analyze(photo, "image (the init image)").kps
        return draw_target_kps(photo, target_kps)
