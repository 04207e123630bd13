"""The PVA identity-inpainting `__call__` shared by `StableDiffusionPVAInpaintPipeline` and
`StableDiffusionXLPVAInpaintPipeline` (not a pipeline itself).

The reference photos' ArcFace embeddings become identity tokens (`PVAAdapter`), and every
cross-attention attends to them in parallel with the text (`PVAAttnProcessor`). The denoising
loop, the masking rule, schedulers, callbacks, LoRAs and offload are the base pipeline's own.
Classifier-free guidance follows the official `inpaint`: the negative prompt has no identity
tokens unless `identity_in_negative=True` (official `extra_feat_neg`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Optional, Union

import torch

from idgen.acceleration.mixin import AccelerationMixin
from idgen.adapters.pva import PVALoaderMixin, check_identity_scale
from idgen.identity import FaceEmbedsInput, resolve_face_embeds
from idgen.errors import IdgenError
from idgen.validation import check_sampling_arguments


class PVAInpaintMixin(AccelerationMixin, PVALoaderMixin):
    """`encode_pva_identity` and the PVA `__call__` on top of a diffusers inpainting pipeline."""

    face_analyzer = None  # optional idgen FaceAnalyzer used for `face_image`

    def encode_pva_identity(self, face_embeds: Optional[FaceEmbedsInput] = None, face_image=None, *,
                            face_analyzer=None) -> torch.Tensor:
        """Identity tokens `[1, T, C]` of one person from 1–20 references (embeddings `[N, 512]`,
        `Face` records, or photos), read by `idgen.identity.resolve_face_embeds` and L2-normalised."""
        adapter = self._require_pva()
        embeds = resolve_face_embeds(face_embeds, face_image, analyzer=face_analyzer or self.face_analyzer,
                                     dim=adapter.embedding_dim, normalize=True, reference_mode="concat")
        return adapter(embeds[None])

    @torch.no_grad()
    def __call__(self, prompt: Union[str, list[str], None] = None, image=None, mask_image=None,
                 face_embeds: Optional[FaceEmbedsInput] = None, face_image=None, *,
                 identity_tokens: Optional[torch.Tensor] = None, identity_scale: Optional[float] = None,
                 identity_in_negative: bool = False, face_analyzer=None,
                 negative_prompt: Union[str, list[str], None] = None, num_inference_steps: int = 50,
                 guidance_scale: float = 7.5, num_images_per_prompt: int = 1, generator=None,
                 latents: Optional[torch.Tensor] = None, prompt_embeds: Optional[torch.Tensor] = None,
                 negative_prompt_embeds: Optional[torch.Tensor] = None, output_type: str = "pil",
                 return_dict: bool = True, cross_attention_kwargs: Optional[dict[str, Any]] = None,
                 callback_on_step_end: Optional[Callable] = None,
                 callback_on_step_end_tensor_inputs: list[str] = ["latents"], **kwargs):
        r"""Inpaint `mask_image` of `image` with the person of the references.

        Args:
            prompt, image, mask_image: as in diffusers' inpainting pipeline (white = repaint).
            face_embeds: 1–20 ArcFace embeddings `[N, 512]` (or `Face` records) of one person.
            face_image: twin of `face_embeds`: 1–20 photos (largest face of each).
            identity_tokens: twin of both: tokens `[1, T, C]` from `encode_pva_identity` (reuse
                them across calls, e.g. for video).
            identity_scale: s >= 0; multiplies the identity tokens' attention weights before the
                joint softmax (1 = official; 0 = the base pipeline exactly). Default: the
                pipeline's (`set_identity_scale`, 1).
            identity_in_negative: give the negative prompt the identity tokens too (official
                `extra_feat_neg`, off by default).
            negative_prompt, num_inference_steps, guidance_scale, num_images_per_prompt, generator,
                latents, prompt_embeds, negative_prompt_embeds, output_type, return_dict,
                cross_attention_kwargs, callback_on_step_end, callback_on_step_end_tensor_inputs:
                as in the base pipeline.
            kwargs: every other argument of the base inpainting pipeline (`strength`, `height`,
                `width`, `padding_mask_crop`, SDXL's `prompt_2` / pooled embeddings, ...).
        """
        check_sampling_arguments(dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                      identity_scale=identity_scale, num_images_per_prompt=num_images_per_prompt,
                                      strength=kwargs.get("strength")))
        given = [x is not None for x in (face_embeds, face_image, identity_tokens)]
        if sum(given) > 1:
            raise IdgenError("Give at most one of `face_embeds`, `face_image` and `identity_tokens`.")
        scale = check_identity_scale(self.config.identity_scale if identity_scale is None else identity_scale)
        cross_attention_kwargs = dict(cross_attention_kwargs or {})
        if any(given) and scale > 0:
            adapter = self._require_pva()
            if identity_tokens is None:
                identity_tokens = self.encode_pva_identity(face_embeds, face_image, face_analyzer=face_analyzer)
            tokens = identity_tokens.to(device=self._execution_device, dtype=self.unet.dtype)
            cross_attention_kwargs["ip_hidden_states"] = adapter.inputs(
                tokens, identity_scale=scale,
                negative_half_without_identity=not identity_in_negative and guidance_scale > 1,
            )
        elif not any(given) and getattr(self, "pva_adapter", None) is not None and scale > 0:
            raise IdgenError("give the person to inpaint: `face_embeds`, `face_image` or `identity_tokens` "
                             "(or identity_scale=0 for plain inpainting).")
        identity_on = "ip_hidden_states" in cross_attention_kwargs
        with self.pva_processors_installed() if identity_on else contextlib.nullcontext():
            return super().__call__(
                prompt=prompt, image=image, mask_image=mask_image, negative_prompt=negative_prompt,
                num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                num_images_per_prompt=num_images_per_prompt, generator=generator, latents=latents,
                prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds, output_type=output_type,
                return_dict=return_dict, cross_attention_kwargs=cross_attention_kwargs or None,
                callback_on_step_end=callback_on_step_end,
                callback_on_step_end_tensor_inputs=list(callback_on_step_end_tensor_inputs), **kwargs,
            )
