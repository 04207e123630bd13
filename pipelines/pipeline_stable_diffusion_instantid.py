"""InstantID as an architecture on Stable Diffusion 1.5: the same Resampler, decoupled identity
attention (16 cross-attentions -> checkpoint keys `ip_adapter.{1,3,...,31}`) and IdentityNet
(a ControlNet whose cross-attention context is the identity tokens), at SD1.5 sizes
(cross-attention width 768). There are no official SD1.5 weights; idgen's trainer writes the same
file layout as the official SDXL `ip-adapter.bin`, which `load_instantid` reads.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import PipelineImageInput
from diffusers.models import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from diffusers.pipelines.controlnet.pipeline_controlnet import StableDiffusionControlNetPipeline, retrieve_timesteps
from diffusers.pipelines.stable_diffusion.pipeline_output import StableDiffusionPipelineOutput
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import logging, replace_example_docstring
from transformers import CLIPTextModel, CLIPTokenizer

from idgen.adapters.instantid.loader import DEFAULT_IDENTITY_SCALE
from idgen.adapters.instantid.model import InstantIDAdapter
from idgen.identity import FaceEmbedsInput, ReferenceMode
from idgen.errors import IdgenError
from idgen.identity import in_window

from idgen.pipelines.pipeline_stable_diffusion_xl_instantid import InstantIDPipelineMixin

logger = logging.get_logger(__name__)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import numpy as np
        >>> from diffusers import ControlNetModel
        >>> from idgen.pipelines.pipeline_stable_diffusion_instantid import StableDiffusionInstantIDPipeline

        >>> controlnet = ControlNetModel.from_pretrained("my-sd15-identitynet")  # from idgen's trainer
        >>> pipe = StableDiffusionInstantIDPipeline.from_pretrained(
        ...     "stable-diffusion-v1-5/stable-diffusion-v1-5", controlnet=controlnet, safety_checker=None
        ... )
        >>> pipe.load_instantid("my-sd15-instantid/ip-adapter.bin")
        >>> image = pipe("photo of a person", face_embeds=np.load("arcface.npy"), image=kps_image).images[0]
        ```
"""


class StableDiffusionInstantIDPipeline(InstantIDPipelineMixin, StableDiffusionControlNetPipeline):
    r"""InstantID text-to-image with a Stable Diffusion 1.5 UNet and an SD1.5 IdentityNet.

    Args:
        vae ([`AutoencoderKL`]), text_encoder ([`CLIPTextModel`]), tokenizer ([`CLIPTokenizer`]),
        unet ([`UNet2DConditionModel`]), scheduler: as in [`StableDiffusionControlNetPipeline`].
        controlnet ([`ControlNetModel`]): the SD1.5 IdentityNet; its context is the identity tokens.
        identity_adapter ([`InstantIDAdapter`], optional): Resampler + identity key/value projections.
        safety_checker, feature_extractor (optional, default None), requires_safety_checker
            (default False), image_encoder: as in [`StableDiffusionControlNetPipeline`].
        identity_scale (`float` or block `dict`, defaults to 0.8): the default identity scale.
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->identity_adapter->unet->vae"
    _optional_components = StableDiffusionControlNetPipeline._optional_components + ["identity_adapter"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        controlnet: ControlNetModel,
        scheduler: KarrasDiffusionSchedulers,
        identity_adapter: Optional[InstantIDAdapter] = None,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker: bool = False,
        identity_scale: Union[float, dict] = DEFAULT_IDENTITY_SCALE,
    ):
        if not isinstance(controlnet, ControlNetModel):
            raise IdgenError(
                f"StableDiffusionInstantIDPipeline takes one IdentityNet ControlNetModel, got {type(controlnet).__name__}."
            )
        super().__init__(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, controlnet=controlnet,
            scheduler=scheduler, safety_checker=safety_checker, feature_extractor=feature_extractor,
            image_encoder=image_encoder, requires_safety_checker=requires_safety_checker,
        )
        self.register_modules(identity_adapter=identity_adapter)
        self.register_to_config(identity_scale=identity_scale)
        self._restore_identity_branch(identity_scale)

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: Union[str, list[str]] = None,
        image: PipelineImageInput = None,
        face_embeds: Optional[FaceEmbedsInput] = None,
        face_image=None,
        pose_image=None,
        identities: Optional[Sequence[Mapping[str, Any]]] = None,
        reference_mode: ReferenceMode = "mean",
        height: Optional[int] = None,
        width: Optional[int] = None,
        num_inference_steps: int = 30,
        timesteps: Optional[list[int]] = None,
        sigmas: Optional[list[float]] = None,
        guidance_scale: float = 5.0,
        negative_prompt: Optional[Union[str, list[str]]] = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: Optional[Union[torch.Generator, list[torch.Generator]]] = None,
        latents: Optional[torch.Tensor] = None,
        prompt_embeds: Optional[torch.Tensor] = None,
        negative_prompt_embeds: Optional[torch.Tensor] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: Optional[dict[str, Any]] = None,
        ip_adapter_scale: Optional[Union[float, dict]] = None,
        controlnet_conditioning_scale: float = 0.8,
        identity_guidance_start: float = 0.0,
        identity_guidance_end: float = 1.0,
        control_guidance_start: float = 0.0,
        control_guidance_end: float = 1.0,
        negative_noise: float = 0.0,
        guess_mode: bool = False,
        clip_skip: Optional[int] = None,
        callback_on_step_end: Optional[Callable] = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
    ):
        r"""Generate images of the person (or people) given by the identity inputs.

        The identity arguments (`face_embeds`, `face_image`, `pose_image`, `identities`,
        `reference_mode`, `ip_adapter_scale`, `identity_guidance_start/end`, `negative_noise`) and
        `image`, `controlnet_conditioning_scale`, `control_guidance_start/end` behave exactly as in
        [`InstantIDPipeline.__call__`]; the text arguments as in [`StableDiffusionControlNetPipeline`].

        Examples:

        Returns:
            [`StableDiffusionPipelineOutput`] or `tuple`: images and the safety checker's flags
            (None without a safety checker).
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        controlnet = self.controlnet

        # 0. Resolve the identity inputs and the keypoint image
        self.check_identity_inputs(
            image, pose_image, height, width, ip_adapter_scale, identity_guidance_start, identity_guidance_end,
            negative_noise, reference_mode,
        )
        people = self.resolve_identities(face_embeds, face_image, identities, reference_mode)
        if image is None:
            image = self.keypoint_image(people, pose_image, width, height)

        # 1. Check inputs
        self.check_inputs(
            prompt, image, None, negative_prompt, prompt_embeds, negative_prompt_embeds, None, None,
            controlnet_conditioning_scale, control_guidance_start, control_guidance_end,
            callback_on_step_end_tensor_inputs,
        )
        self._guidance_scale = guidance_scale
        self._clip_skip = clip_skip
        self._cross_attention_kwargs = cross_attention_kwargs
        self._interrupt = False

        # 2. Define call parameters
        if prompt is not None and isinstance(prompt, str):
            batch_size = 1
        elif prompt is not None and isinstance(prompt, list):
            batch_size = len(prompt)
        else:
            batch_size = prompt_embeds.shape[0]
        device = self._execution_device
        guess_mode = guess_mode or controlnet.config.global_pool_conditions
        num_images = batch_size * num_images_per_prompt

        # 3. Encode the prompt and the identities (once per call)
        lora_scale = cross_attention_kwargs.get("scale", None) if cross_attention_kwargs is not None else None
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, device, num_images_per_prompt, self.do_classifier_free_guidance, negative_prompt,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds, lora_scale=lora_scale,
            clip_skip=self.clip_skip,
        )
        if self.do_classifier_free_guidance:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])
        identity_tokens, identity_inputs = self.encode_identities(
            people, num_images=num_images, do_classifier_free_guidance=self.do_classifier_free_guidance,
            reference_mode=reference_mode, ip_adapter_scale=ip_adapter_scale, negative_noise=negative_noise,
            generator=generator, device=device, dtype=prompt_embeds.dtype,
        )

        # 4. Prepare the keypoint image
        image = self.prepare_image(
            image=image, width=width, height=height, batch_size=num_images,
            num_images_per_prompt=num_images_per_prompt, device=device, dtype=controlnet.dtype,
            do_classifier_free_guidance=self.do_classifier_free_guidance, guess_mode=guess_mode,
        )
        height, width = image.shape[-2:]

        # 5. Prepare timesteps
        timesteps, num_inference_steps = retrieve_timesteps(self.scheduler, num_inference_steps, device, timesteps, sigmas)
        self._num_timesteps = len(timesteps)

        # 6. Prepare latent variables
        latents = self.prepare_latents(
            num_images, self.unet.config.in_channels, height, width, prompt_embeds.dtype, device, generator, latents
        )
        identity_inputs.latent_size = tuple(latents.shape[-2:])
        timestep_cond = None
        if self.unet.config.time_cond_proj_dim is not None:
            guidance_scale_tensor = torch.tensor(self.guidance_scale - 1).repeat(num_images)
            timestep_cond = self.get_guidance_scale_embedding(
                guidance_scale_tensor, embedding_dim=self.unet.config.time_cond_proj_dim
            ).to(device=device, dtype=latents.dtype)

        # 7. Per-step switches as Python values (no device sync in the loop)
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        n = len(timesteps)
        controlnet_keep = [float(in_window(i, n, control_guidance_start, control_guidance_end)) for i in range(n)]
        identity_on = [in_window(i, n, identity_guidance_start, identity_guidance_end) for i in range(n)]
        base_kwargs = dict(cross_attention_kwargs or {})
        kwargs_with_identity = {**base_kwargs, "ip_hidden_states": identity_inputs}
        identity_tokens = identity_tokens.to(device)

        # 8. Denoising loop
        num_warmup_steps = len(timesteps) - num_inference_steps * self.scheduler.order
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                latent_model_input = torch.cat([latents] * 2) if self.do_classifier_free_guidance else latents
                latent_model_input = self.scheduler.scale_model_input(latent_model_input, t)

                if guess_mode and self.do_classifier_free_guidance:
                    control_model_input = self.scheduler.scale_model_input(latents, t)
                    controlnet_context = identity_tokens.chunk(2)[1]
                else:
                    control_model_input = latent_model_input
                    controlnet_context = identity_tokens
                down_block_res_samples, mid_block_res_sample = self.controlnet(
                    control_model_input, t, encoder_hidden_states=controlnet_context, controlnet_cond=image,
                    conditioning_scale=controlnet_conditioning_scale * controlnet_keep[i], guess_mode=guess_mode,
                    return_dict=False,
                )
                if guess_mode and self.do_classifier_free_guidance:
                    down_block_res_samples = [torch.cat([torch.zeros_like(d), d]) for d in down_block_res_samples]
                    mid_block_res_sample = torch.cat([torch.zeros_like(mid_block_res_sample), mid_block_res_sample])

                noise_pred = self.unet(
                    latent_model_input, t, encoder_hidden_states=prompt_embeds, timestep_cond=timestep_cond,
                    cross_attention_kwargs=kwargs_with_identity if identity_on[i] else base_kwargs or None,
                    down_block_additional_residuals=down_block_res_samples,
                    mid_block_additional_residual=mid_block_res_sample, return_dict=False,
                )[0]
                if self.do_classifier_free_guidance:
                    noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
                    noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
                latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]

                if callback_on_step_end is not None:
                    callback_kwargs = {}
                    for k in callback_on_step_end_tensor_inputs:
                        callback_kwargs[k] = locals()[k]
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    latents = callback_outputs.pop("latents", latents)
                    prompt_embeds = callback_outputs.pop("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = callback_outputs.pop("negative_prompt_embeds", negative_prompt_embeds)
                    image = callback_outputs.pop("image", image)

                if i == len(timesteps) - 1 or ((i + 1) > num_warmup_steps and (i + 1) % self.scheduler.order == 0):
                    progress_bar.update()

        # 9. Decode
        if output_type != "latent":
            image = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False, generator=generator)[0]
            image, has_nsfw_concept = self.run_safety_checker(image, device, prompt_embeds.dtype)
        else:
            image, has_nsfw_concept = latents, None
        if output_type != "latent":
            do_denormalize = [True] * image.shape[0] if has_nsfw_concept is None else [not x for x in has_nsfw_concept]
            image = self.image_processor.postprocess(image, output_type=output_type, do_denormalize=do_denormalize)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (image, has_nsfw_concept)
        return StableDiffusionPipelineOutput(images=image, nsfw_content_detected=has_nsfw_concept)
