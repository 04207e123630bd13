"""Diffusion face restoration on SD1.5: `FaceRestorePipeline`.

The degraded face (an aligned crop) conditions the generation through a **ControlNet branch** (as
DiffBIR's IRControlNet), not through latent concatenation: the base UNet stays frozen and
unchanged, so user LoRAs and the identity adapters (IP-Adapter-FaceID's attention) compose with
it, and one restoration ControlNet serves every fine-tune of the base; concatenation would need a
retrained UNet input layer per base model. The sampler also starts from the degraded crop's
latents (img2img), which keeps colours and low frequencies.

`fidelity` in [0, 1] is the quality/fidelity knob: ControlNet scale = 0.5 + 0.5·fidelity and
img2img strength = 1 − 0.5·fidelity. Fidelity 1 follows the input closely (scale 1, half the noise
schedule); 0 lets the prior re-draw details (scale 0.5, from pure noise). Explicit
`controlnet_conditioning_scale` / `strength` arguments win.

Identity: with an IP-Adapter-FaceID file loaded (`load_faceid`), a clean reference photo of the
person (`face_image=` or `face_embeds=`) steers the restored face towards that identity.
`restore_faces(photo)` runs the whole photo: every face detected, aligned (FFHQ), restored in one
batch, pasted back with a feathered seam.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import torch
from diffusers import AutoencoderKL, ControlNetModel, StableDiffusionControlNetImg2ImgPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.schedulers import KarrasDiffusionSchedulers
from PIL import Image
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from idgen.errors import FaceNotFoundError, IdgenError
from idgen.face import align_face, get_face_analyzer, paste_back
from idgen.image_io import load_image
from idgen.validation import check_sampling_arguments
from idgen.pipelines.faceid_common import FaceIDPipelineMixin

DEFAULT_PROMPT = "a high quality, detailed photo of a face"
DEFAULT_NEGATIVE = "blurry, low quality, jpeg artifacts, noise, deformed"


def fidelity_to_scales(fidelity: float) -> tuple[float, float]:
    """`(controlnet_conditioning_scale, strength)` for a fidelity in [0, 1] (see the module docstring)."""
    if not 0.0 <= fidelity <= 1.0:
        raise IdgenError(f"fidelity must be in [0, 1], got {fidelity}.")
    return 0.5 + 0.5 * fidelity, 1.0 - 0.5 * fidelity


@dataclass
class RestoredPhoto:
    """`image` `[H, W, 3]` uint8 with the restored faces pasted back, and per face its box and a note."""

    image: np.ndarray
    faces: list[dict] = field(default_factory=list)


class FaceRestorePipeline(FaceIDPipelineMixin, StableDiffusionControlNetImg2ImgPipeline):
    r"""Blind face restoration of aligned crops with a restoration ControlNet (SD1.5).

    Args: the components of [`StableDiffusionControlNetImg2ImgPipeline`] (the safety checker
        optional, off by default); `controlnet` is the restoration ControlNet (trained by
        `idgen train restore`).
    """

    def __init__(
        self, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, unet: UNet2DConditionModel,
        controlnet: ControlNetModel, scheduler: KarrasDiffusionSchedulers,
        safety_checker: Optional[StableDiffusionSafetyChecker] = None,
        feature_extractor: Optional[CLIPImageProcessor] = None,
        image_encoder: Optional[CLIPVisionModelWithProjection] = None, requires_safety_checker: bool = False,
    ):
        super().__init__(vae, text_encoder, tokenizer, unet, controlnet, scheduler, safety_checker, feature_extractor,
                         image_encoder=image_encoder, requires_safety_checker=requires_safety_checker)

    @torch.no_grad()
    def __call__(
        self, image=None, prompt: Union[str, list[str], None] = None, *, fidelity: float = 0.5,
        negative_prompt: Union[str, list[str], None] = None, face_embeds=None, face_image=None,
        identity_scale: Optional[float] = None, controlnet_conditioning_scale: Optional[float] = None,
        strength: Optional[float] = None, num_inference_steps: int = 30, guidance_scale: float = 4.0,
        num_images_per_prompt: int = 1, generator=None, latents: Optional[torch.Tensor] = None,
        prompt_embeds: Optional[torch.Tensor] = None, negative_prompt_embeds: Optional[torch.Tensor] = None,
        output_type: str = "pil", return_dict: bool = True, cross_attention_kwargs: Optional[dict] = None,
        callback_on_step_end=None, callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",), **kwargs,
    ):
        r"""Restore degraded aligned face crop(s) `image` (PIL / array / list; the UNet's size).

        Args:
            prompt / negative_prompt: default `DEFAULT_PROMPT` / `DEFAULT_NEGATIVE` unless the
                matching `*_embeds` are given.
            fidelity: the quality/fidelity knob (module docstring); explicit
                `controlnet_conditioning_scale` / `strength` override it.
            face_embeds / face_image / identity_scale: a clean reference of the person and its
                weight (needs `load_faceid`; the other identity arguments of
                [`FaceIDPipelineMixin`] are accepted too).
            kwargs: the base pipeline's other arguments (`height`, `width`, `clip_skip`, ...).
        """
        if image is None:
            raise IdgenError("give the degraded face crop(s) as `image`.")
        check_sampling_arguments({"fidelity": fidelity})
        if prompt is None and prompt_embeds is None:
            prompt = DEFAULT_PROMPT
        if negative_prompt is None and negative_prompt_embeds is None:
            negative_prompt = DEFAULT_NEGATIVE
        control_scale, start = fidelity_to_scales(fidelity)
        if controlnet_conditioning_scale is not None:
            control_scale = controlnet_conditioning_scale
        images = image if isinstance(image, list) else [image]
        if isinstance(prompt, str) and len(images) > 1:
            prompt = [prompt] * len(images)
        return self._generate(dict(
            prompt=prompt, image=images, control_image=images, negative_prompt=negative_prompt,
            face_embeds=face_embeds, face_image=face_image, identity_scale=identity_scale,
            controlnet_conditioning_scale=control_scale,
            strength=start if strength is None else strength, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, num_images_per_prompt=num_images_per_prompt, generator=generator,
            latents=latents, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
            output_type=output_type, return_dict=return_dict, cross_attention_kwargs=cross_attention_kwargs,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=list(callback_on_step_end_tensor_inputs), **kwargs,
        ))

    def restore_faces(self, photo, *, analyzer=None, crop_size: Optional[int] = None, min_face_size: int = 16,
                      feather: int = 8, **kwargs) -> RestoredPhoto:
        """Restore every face of a whole photo and paste them back.

        Args:
            photo: path, PIL or `[H, W, 3]` uint8.
            analyzer: an `idgen.face.FaceAnalyzer` (default: `get_face_analyzer()`).
            crop_size: aligned crop size (default: the UNet's native size).
            min_face_size: faces narrower than this (pixels) are left as they are, with a note.
            kwargs: `__call__` arguments (`fidelity`, `face_image`, `num_inference_steps`, ...).

        Raises:
            FaceNotFoundError: no face in the photo.
        """
        if analyzer is None:
            analyzer = get_face_analyzer()
        image = load_image(photo)
        faces = sorted(analyzer.detect(image), key=lambda f: float(f.bbox[0]))
        if not faces:
            raise FaceNotFoundError("no face found in the photo: nothing to restore.")
        size = crop_size or self.unet.config.sample_size * self.vae_scale_factor
        report, jobs = [], []
        for i, face in enumerate(faces):
            entry = {"index": i, "bbox": [float(v) for v in face.bbox], "note": None}
            report.append(entry)
            if face.width < min_face_size:
                entry["note"] = f"face {face.width:.0f} px wide (< {min_face_size}): left as is"
                continue
            jobs.append((entry, align_face(image, face.kps, size=size, mode="ffhq")))
        result = image.copy()
        if jobs:
            kwargs.setdefault("output_type", "np")
            out = self(image=[Image.fromarray(a.image) for _, a in jobs], height=size, width=size, **kwargs).images
            for (entry, aligned), crop in zip(jobs, out):
                restored = np.clip(np.rint(np.asarray(crop) * 255.0), 0, 255).astype(np.uint8)
                result = paste_back(result, restored, aligned.inverse, feather=feather)
                entry["restored"] = True
        return RestoredPhoto(image=result, faces=report)
