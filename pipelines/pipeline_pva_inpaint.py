"""Identity-preserving face inpainting with PVA: `PVAInpaintPipeline` (SD1.5 / SD2 inpainting
UNets) and `PVAInpaintXLPipeline` (SDXL inpainting).

Each is diffusers' inpainting pipeline plus a `pva_adapter` component: the reference photos'
ArcFace embeddings become identity tokens (`PVAAdapter`), and every cross-attention attends to them
in parallel with the text (`PVAAttnProcessor`). The denoising loop, the masking rule, schedulers,
callbacks, LoRAs and offload are the base pipeline's own.

Classifier-free guidance follows the official `inpaint`: the negative prompt has no identity
tokens unless `identity_in_negative=True` (official `extra_feat_neg`).
"""

from __future__ import annotations

from typing import Optional

import torch
from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline

from idgen.adapters.pva import MAX_REFERENCES, PVAAdapter, PVALoaderMixin
from idgen.identity import FaceEmbedsInput
from idgen.errors import IdgenError
from idgen.identity import resolve_face_embeds

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from idgen.pipelines import PVAInpaintPipeline
        >>> pipe = PVAInpaintPipeline.from_pretrained("path/to/stable-diffusion-2-inpainting")
        >>> pipe.load_pva("FPIP.bin")  # official file, or a saved pva_adapter/ folder
        >>> out = pipe("photo of a person", image=photo, mask_image=face_mask,
        ...            face_image=["ref1.jpg", "ref2.jpg"]).images[0]
        ```
"""


class PVACallMixin:
    """The PVA `__call__` shared by the SD and SDXL inpainting pipelines."""

    face_analyzer = None  # optional idgen FaceAnalyzer used for `face_image`

    def encode_pva_identity(self, face_embeds: Optional[FaceEmbedsInput] = None, face_image=None, *,
                            face_analyzer=None) -> torch.Tensor:
        """Identity tokens `[1, T, C]` of one person from 1–20 references (embeddings `[N, 512]`,
        `Face` records, or photos). Embeddings are L2-normalised."""
        adapter = self._require_pva()
        embeds = resolve_face_embeds(face_embeds, face_image, analyzer=face_analyzer or self.face_analyzer,
                                     dim=adapter.embedding_dim, normalize=True, reference_mode="concat")
        if embeds.shape[0] > MAX_REFERENCES:
            raise IdgenError(f"PVA takes at most {MAX_REFERENCES} reference photos, got {embeds.shape[0]}.")
        return adapter(embeds[None])

    def _require_pva(self) -> PVAAdapter:
        if getattr(self, "pva_adapter", None) is None:
            raise IdgenError("no PVA adapter is loaded: call `pipe.load_pva(path)` (or `init_pva()` to train one).")
        return self.pva_adapter

    @torch.no_grad()
    def __call__(self, prompt=None, image=None, mask_image=None, face_embeds: Optional[FaceEmbedsInput] = None,
                 face_image=None, *, identity_tokens: Optional[torch.Tensor] = None, identity_scale: float = 1.0,
                 identity_in_negative: bool = False, face_analyzer=None, cross_attention_kwargs: Optional[dict] = None,
                 **kwargs):
        r"""Inpaint `mask_image` of `image` with the person of the references.

        Args:
            prompt, image, mask_image: as in diffusers' inpainting pipeline (white = repaint).
            face_embeds: 1–20 ArcFace embeddings `[N, 512]` (or `Face` records) of one person.
            face_image: twin of `face_embeds`: 1–20 photos (largest face of each).
            identity_tokens: twin of both: tokens `[1, T, C]` from `encode_pva_identity` (reuse
                them across calls, e.g. for video).
            identity_scale: s >= 0; multiplies the identity tokens' attention weights before the
                joint softmax (1 = official; 0 = the base pipeline exactly).
            identity_in_negative: give the negative prompt the identity tokens too (official
                `extra_feat_neg`, off by default).
            kwargs: every other argument of the base inpainting pipeline (`strength`,
                `num_inference_steps`, `guidance_scale`, `generator`, `output_type`,
                `callback_on_step_end`, `padding_mask_crop`, ...).
        """
        given = [x is not None for x in (face_embeds, face_image, identity_tokens)]
        if sum(given) > 1:
            raise IdgenError("Give at most one of `face_embeds`, `face_image` and `identity_tokens`.")
        if identity_scale < 0:
            raise IdgenError(f"identity_scale must be >= 0, got {identity_scale}.")
        cross_attention_kwargs = dict(cross_attention_kwargs or {})
        if any(given) and identity_scale > 0:
            adapter = self._require_pva()
            if identity_tokens is None:
                identity_tokens = self.encode_pva_identity(face_embeds, face_image, face_analyzer=face_analyzer)
            width = adapter.config.cross_attention_dim
            if identity_tokens.ndim != 3 or identity_tokens.shape[-1] != width:
                raise IdgenError(f"identity_tokens must be [B, T, {width}], got {tuple(identity_tokens.shape)}.")
            tokens = identity_tokens.to(device=self._execution_device, dtype=self.unet.dtype)
            cross_attention_kwargs["ip_hidden_states"] = adapter.inputs(
                tokens, scale=identity_scale, negative_half_without_identity=not identity_in_negative
                and kwargs.get("guidance_scale", self._default_guidance_scale) > 1,
            )
        elif not any(given) and getattr(self, "pva_adapter", None) is not None and identity_scale > 0:
            raise IdgenError("give the person to inpaint: `face_embeds`, `face_image` or `identity_tokens` "
                             "(or identity_scale=0 for plain inpainting).")
        kwargs.setdefault("guidance_scale", self._default_guidance_scale)
        return super().__call__(prompt=prompt, image=image, mask_image=mask_image,
                                cross_attention_kwargs=cross_attention_kwargs or None, **kwargs)


class PVAInpaintPipeline(PVALoaderMixin, PVACallMixin, StableDiffusionInpaintPipeline):
    r"""PVA face inpainting on a Stable Diffusion (1.5 / 2) inpainting UNet (9 input channels; a
    4-channel UNet uses diffusers' latent-blend rule).

    Args: the components of `StableDiffusionInpaintPipeline`, plus
        pva_adapter ([`PVAAdapter`], optional): identity encoder + visual projections.
    """

    _default_guidance_scale = 7.5
    model_cpu_offload_seq = "text_encoder->pva_adapter->unet->vae"
    _optional_components = StableDiffusionInpaintPipeline._optional_components + ["pva_adapter"]

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, safety_checker=None, feature_extractor=None,
                 image_encoder=None, requires_safety_checker: bool = False, pva_adapter: Optional[PVAAdapter] = None):
        super().__init__(vae, text_encoder, tokenizer, unet, scheduler, safety_checker, feature_extractor,
                         image_encoder=image_encoder, requires_safety_checker=requires_safety_checker)
        self.register_modules(pva_adapter=pva_adapter)
        if pva_adapter is not None:
            self._install_pva_processors()


class PVAInpaintXLPipeline(PVALoaderMixin, PVACallMixin, StableDiffusionXLInpaintPipeline):
    r"""PVA face inpainting on an SDXL inpainting UNet; identity tokens have the 2048 text width.

    Args: the components of `StableDiffusionXLInpaintPipeline`, plus
        pva_adapter ([`PVAAdapter`], optional).
    """

    _default_guidance_scale = 7.5
    model_cpu_offload_seq = "text_encoder->text_encoder_2->pva_adapter->unet->vae"
    _optional_components = StableDiffusionXLInpaintPipeline._optional_components + ["pva_adapter"]

    def __init__(self, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, unet, scheduler,
                 image_encoder=None, feature_extractor=None, requires_aesthetics_score: bool = False,
                 force_zeros_for_empty_prompt: bool = True, add_watermarker: Optional[bool] = None,
                 pva_adapter: Optional[PVAAdapter] = None):
        super().__init__(vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, unet, scheduler,
                         image_encoder=image_encoder, feature_extractor=feature_extractor,
                         requires_aesthetics_score=requires_aesthetics_score,
                         force_zeros_for_empty_prompt=force_zeros_for_empty_prompt, add_watermarker=add_watermarker)
        self.register_modules(pva_adapter=pva_adapter)
        if pva_adapter is not None:
            self._install_pva_processors()
