"""InstantID identity inpainting: `InstantIDInpaintPipeline` (SDXL) and
`StableDiffusionInstantIDInpaintPipeline` (SD1.5 architecture).

Each is diffusers' ControlNet inpainting pipeline (its denoising loop, masking rule, `strength`,
`padding_mask_crop`, schedulers and callbacks) with InstantID's two identity paths added:
- the UNet's cross-attentions get the identity keys/values (`InstantIDAttnProcessor`, through
  `cross_attention_kwargs["ip_hidden_states"]`);
- the IdentityNet's cross-attention context is the identity tokens, not the text. diffusers' loop
  passes the prompt embeddings to the ControlNet, so a forward pre-hook, installed for the call
  only, swaps them for the tokens (written by hand because diffusers has no argument for a
  separate ControlNet context; the hook is removed in a `finally`).
The IdentityNet is fed the keypoints of the face being repainted: detected in `image` (the face
that overlaps the mask most), or given as `target_kps`, or a ready `control_image`.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import PIL.Image
import torch
from diffusers import StableDiffusionControlNetInpaintPipeline, StableDiffusionXLControlNetInpaintPipeline
from diffusers.models import ControlNetModel

from idgen.adapters.instantid.loader import DEFAULT_IDENTITY_SCALE
from idgen.conditioning import draw_kps
from idgen.identity import FaceEmbedsInput, ReferenceMode
from idgen.errors import FaceNotFoundError, IdgenError
from idgen.image_io import load_image
from idgen.pipelines.pipeline_stable_diffusion_xl_instantid import InstantIDPipelineMixin


def masked_face_kps(image: np.ndarray, mask: np.ndarray, analyzer) -> np.ndarray:
    """Keypoints `[5, 2]` (pixels of `image`) of the detected face that overlaps `mask` most.

    Args:
        image: `[H, W, 3]` uint8; mask: `[H, W]`, > 0 where the image is repainted.

    Raises:
        FaceNotFoundError: no detected face overlaps the mask.
    """
    faces = analyzer.get(image, select="all")
    best, best_overlap = None, 0.0
    for face in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face.bbox)
        region = mask[max(0, y1): max(0, y2), max(0, x1): max(0, x2)]
        overlap = float((region > 0).sum())
        if overlap > best_overlap:
            best, best_overlap = face, overlap
    if best is None:
        raise FaceNotFoundError(
            "no detected face overlaps the mask, so there are no keypoints for the IdentityNet; pass "
            "`target_kps` ([5, 2] pixels) or a keypoint `control_image`."
        )
    return np.asarray(best.kps, dtype=np.float32)


class InstantIDInpaintMixin(InstantIDPipelineMixin):
    """The identity-inpainting `__call__` shared by the SDXL and SD1.5 pipelines."""

    def control_image_for(self, photo: np.ndarray, mask_image, target_kps: Optional[np.ndarray]) -> PIL.Image.Image:
        """The IdentityNet condition at the size of `photo` (`[H, W, 3]` uint8): `target_kps`, else
        the keypoints of the face under `mask_image`."""
        if target_kps is None:
            mask = load_image(mask_image)[..., 0]
            if mask.shape[:2] != photo.shape[:2]:
                raise IdgenError(f"mask_image is {mask.shape[1]}x{mask.shape[0]} but image is "
                                 f"{photo.shape[1]}x{photo.shape[0]}; they must match.")
            target_kps = masked_face_kps(photo, mask, self._analyzer())
        kps = np.asarray(target_kps, dtype=np.float32)
        if kps.shape != (5, 2) or not np.isfinite(kps).all():
            raise IdgenError(f"target_kps must be 5 finite (x, y) points [5, 2], got shape {kps.shape}.")
        return draw_kps((photo.shape[1], photo.shape[0]), kps)

    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[str, list[str], None] = None,
        image=None,
        mask_image=None,
        face_embeds: Optional[FaceEmbedsInput] = None,
        face_image=None,
        *,
        control_image=None,
        target_kps: Optional[np.ndarray] = None,
        identities: Optional[Sequence[Mapping[str, Any]]] = None,
        reference_mode: ReferenceMode = "mean",
        ip_adapter_scale: Optional[Union[float, dict]] = None,
        negative_noise: float = 0.0,
        controlnet_conditioning_scale: float = 0.8,
        guidance_scale: float = 5.0,
        num_images_per_prompt: int = 1,
        height: Optional[int] = None,
        width: Optional[int] = None,
        generator=None,
        cross_attention_kwargs: Optional[dict] = None,
        **kwargs,
    ):
        r"""Repaint the masked face of `image` as the person given by the identity inputs.

        Args:
            prompt, image, mask_image (white = repaint), height, width: as in diffusers' ControlNet
                inpainting pipeline; `strength`, `num_inference_steps`, `padding_mask_crop`,
                `control_guidance_start/end`, `guess_mode`, `callback_on_step_end`, ... go through
                `kwargs` unchanged.
            face_embeds / face_image / identities / reference_mode / ip_adapter_scale /
                negative_noise: the identity, exactly as in `InstantIDPipeline.__call__`.
            control_image: a ready keypoint image (same size as `image`); else drawn from
                `target_kps` ([5, 2] pixels of `image`), else from the face detected under the mask.
            controlnet_conditioning_scale: the IdentityNet scale (official default 0.8).
        """
        # 1. Identity and IdentityNet condition
        self.check_identity_inputs(None, None, height, width, ip_adapter_scale, 0.0, 1.0, negative_noise, reference_mode)
        if image is None or mask_image is None:
            raise IdgenError("identity inpainting needs `image` (the photo) and `mask_image` (white = repaint).")
        photo = load_image(image)
        people = self.resolve_identities(face_embeds, face_image, identities, reference_mode)
        if control_image is None:
            control_image = self.control_image_for(photo, mask_image, target_kps)
        elif target_kps is not None:
            raise IdgenError("Give either `control_image` or `target_kps`, not both.")

        # 2. Identity tokens (IdentityNet context) and keys/values (UNet), once per call
        batch_size = 1 if prompt is None or isinstance(prompt, str) else len(prompt)
        do_cfg = guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None
        device = self._execution_device
        tokens, identity_inputs = self.encode_identities(
            people, num_images=batch_size * num_images_per_prompt, do_classifier_free_guidance=do_cfg,
            reference_mode=reference_mode, ip_adapter_scale=ip_adapter_scale, negative_noise=negative_noise,
            generator=generator, device=device, dtype=self.unet.dtype,
        )
        f = self.vae_scale_factor
        identity_inputs.latent_size = ((height or photo.shape[0]) // f, (width or photo.shape[1]) // f)
        cross_attention_kwargs = {**(cross_attention_kwargs or {}), "ip_hidden_states": identity_inputs}

        # 3. Denoise with diffusers' ControlNet-inpainting loop; the IdentityNet sees the tokens
        def identity_context(module, args, kw):
            batch = kw["encoder_hidden_states"].shape[0]
            context = tokens if batch == tokens.shape[0] else tokens.chunk(2)[1]  # guess mode: positive half
            return args, {**kw, "encoder_hidden_states": context.to(kw["encoder_hidden_states"].dtype)}

        handle = self.controlnet.register_forward_pre_hook(identity_context, with_kwargs=True)
        try:
            return super().__call__(
                prompt=prompt, image=PIL.Image.fromarray(photo), mask_image=mask_image, control_image=control_image, height=height,
                width=width, controlnet_conditioning_scale=controlnet_conditioning_scale, guidance_scale=guidance_scale,
                num_images_per_prompt=num_images_per_prompt, generator=generator,
                cross_attention_kwargs=cross_attention_kwargs, **kwargs,
            )
        finally:
            handle.remove()


def _check_identitynet(controlnet, name: str) -> None:
    if not isinstance(controlnet, ControlNetModel):
        raise IdgenError(f"{name} takes one IdentityNet ControlNetModel, got {type(controlnet).__name__}.")


class InstantIDInpaintPipeline(InstantIDInpaintMixin, StableDiffusionXLControlNetInpaintPipeline):
    r"""InstantID identity inpainting on SDXL (an SDXL inpainting UNet, 9 channels, or a base UNet
    with diffusers' latent-blend rule) with the IdentityNet.

    Args: the components of `StableDiffusionXLControlNetInpaintPipeline` (controlnet = the
        IdentityNet), plus identity_adapter ([`InstantIDAdapter`], optional) and identity_scale.
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->identity_adapter->unet->vae"
    _optional_components = StableDiffusionXLControlNetInpaintPipeline._optional_components + ["identity_adapter"]

    def __init__(self, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, unet, controlnet, scheduler,
                 identity_adapter=None, requires_aesthetics_score: bool = False, force_zeros_for_empty_prompt: bool = True,
                 add_watermarker: Optional[bool] = None, feature_extractor=None, image_encoder=None,
                 identity_scale: Union[float, dict] = DEFAULT_IDENTITY_SCALE):
        _check_identitynet(controlnet, type(self).__name__)
        super().__init__(vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, unet, controlnet, scheduler,
                         requires_aesthetics_score=requires_aesthetics_score,
                         force_zeros_for_empty_prompt=force_zeros_for_empty_prompt, add_watermarker=add_watermarker,
                         feature_extractor=feature_extractor, image_encoder=image_encoder)
        self.register_modules(identity_adapter=identity_adapter)
        self.register_to_config(identity_scale=identity_scale)
        self._restore_identity_branch(identity_scale)


class StableDiffusionInstantIDInpaintPipeline(InstantIDInpaintMixin, StableDiffusionControlNetInpaintPipeline):
    r"""InstantID identity inpainting with an SD1.5-architecture UNet and IdentityNet.

    Args: the components of `StableDiffusionControlNetInpaintPipeline`, plus identity_adapter and
        identity_scale.
    """

    model_cpu_offload_seq = "text_encoder->identity_adapter->unet->vae"
    _optional_components = StableDiffusionControlNetInpaintPipeline._optional_components + ["identity_adapter"]

    def __init__(self, vae, text_encoder, tokenizer, unet, controlnet, scheduler, identity_adapter=None,
                 safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker: bool = False,
                 identity_scale: Union[float, dict] = DEFAULT_IDENTITY_SCALE):
        _check_identitynet(controlnet, type(self).__name__)
        super().__init__(vae, text_encoder, tokenizer, unet, controlnet, scheduler, safety_checker, feature_extractor,
                         image_encoder=image_encoder, requires_safety_checker=requires_safety_checker)
        self.register_modules(identity_adapter=identity_adapter)
        self.register_to_config(identity_scale=identity_scale)
        self._restore_identity_branch(identity_scale)
