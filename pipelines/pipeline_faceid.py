"""IP-Adapter-FaceID pipelines: `FaceIDPipeline` (SD1.5) and `FaceIDXLPipeline` (SDXL).

Two classes, one per base, because diffusers has one per base (`StableDiffusionPipeline`,
`StableDiffusionXLPipeline`: different text encoders, conditioning and defaults); everything FaceID
adds lives in `FaceIDCallMixin` (inputs -> identity embeddings -> diffusers' native IP-Adapter
call) and `FaceIDLoaderMixin` (checkpoint loading), shared by both. The denoising loop is the base
pipeline's own, so schedulers, callbacks, offload, LoRAs, `output_type` etc. behave as in diffusers.

The math is the official `IPAdapterFaceID.generate` / `IPAdapterFaceIDPlus.generate`: identity
tokens are the projection of the normalised ArcFace embedding, negative identity tokens the
projection of a zero embedding (and, for Plus, of the CLIP hidden states of a black image), the
rank-128 LoRA is always on, and the identity branch is added with weight `scale`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from diffusers import (
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import logging

from idgen.adapters.faceid.layout import ID_EMBED_DIM
from idgen.adapters.faceid.loader import FaceIDLoaderMixin
from idgen.identity import ReferenceMode, combine_references, face_embeds_to_tensor
from idgen.errors import IdgenError
from idgen.identity import in_window
from idgen.face import align_face, get_face_analyzer
from idgen.image_io import load_image

logger = logging.get_logger(__name__)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from idgen.face import get_face_analyzer
        >>> from idgen.pipelines.pipeline_faceid import FaceIDPipeline

        >>> pipe = FaceIDPipeline.from_pretrained("path/to/stable-diffusion-v1-5", torch_dtype=torch.float16)
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

FaceInput = Any  # an array/tensor [512] or [N, 512], a Face, or a list of them (see idgen.identity)


@dataclass
class IdentityEmbeds:
    """What the identity branch gets for one call (before CFG and batching).

    `embeds` `[I, 512]` (normalised ArcFace) and, for Plus, `clip` / `negative_clip` `[I, T, C]`
    (CLIP hidden states[-2] of the aligned crops / of a black image). I is 1 (one person,
    references averaged), N (references concatenated) or P (one per masked person).
    """

    embeds: torch.Tensor
    clip: Optional[torch.Tensor] = None
    negative_clip: Optional[torch.Tensor] = None


def _count(timesteps, sigmas, num_inference_steps: int) -> int:
    """Number of denoising steps the base pipeline will run (custom `timesteps`/`sigmas` win)."""
    for custom in (timesteps, sigmas):
        if custom is not None:
            return len(custom)
    return num_inference_steps


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _face_crop(image: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """The aligned face crop FaceID-Plus feeds to CLIP (insightface `norm_crop`, 224 px)."""
    out = align_face(image, kps, size=224)
    crop = out[0] if isinstance(out, (tuple, list)) else getattr(out, "image", out)
    return np.asarray(crop)


class FaceIDCallMixin:
    """The FaceID `__call__` shared by the SD1.5 and SDXL pipelines."""

    _default_guidance_scale = 7.5
    face_analyzer = None  # optional `idgen.face.FaceAnalyzer` used for `face_image`

    # ------------------------------------------------------------------ 1. inputs

    def check_faceid_inputs(self, face_embeds, face_image, face_crop, clip_image_embeds,
                            negative_clip_image_embeds, face_masks, reference_mode, scale, identity_start,
                            identity_end, negative_noise, kwargs):
        self._require_faceid()
        if (face_embeds is None) == (face_image is None):
            raise IdgenError(
                "Give exactly one of `face_embeds` (embeddings or Face records) and `face_image` (photos)."
            )
        if reference_mode not in ("mean", "normed_mean", "concat"):
            raise IdgenError(f"reference_mode must be 'mean', 'normed_mean' or 'concat', got {reference_mode!r}.")
        in_window(0, 1, identity_start, identity_end)  # validates the fractions
        if negative_noise < 0:
            raise IdgenError(f"negative_noise must be >= 0, got {negative_noise}.")
        for name in ("ip_adapter_image", "ip_adapter_image_embeds"):
            if kwargs.get(name) is not None:
                raise IdgenError(
                    f"`{name}` is set by the FaceID pipeline from `face_embeds`/`face_image`; do not pass it."
                )
        if not self.faceid_spec.is_plus and (face_crop is not None or clip_image_embeds is not None):
            raise IdgenError(
                "`face_crop` / `clip_image_embeds` are for FaceID-Plus; the loaded adapter is plain FaceID."
            )
        if face_crop is not None and clip_image_embeds is not None:
            raise IdgenError("Give at most one of `face_crop` and `clip_image_embeds`.")
        if negative_clip_image_embeds is not None and clip_image_embeds is None:
            raise IdgenError("`negative_clip_image_embeds` goes with `clip_image_embeds`.")
        if face_masks is not None:
            masks = _as_list(face_masks)
            for name, value in (("face_embeds", face_embeds), ("face_image", face_image),
                                ("face_crop", face_crop), ("clip_image_embeds", clip_image_embeds),
                                ("negative_clip_image_embeds", negative_clip_image_embeds)):
                if value is not None and (not isinstance(value, (list, tuple)) or len(value) != len(masks)):
                    raise IdgenError(
                        f"with `face_masks` ({len(masks)} masks), `{name}` must be a list with one entry per "
                        "person (each entry: that person's embedding(s) / photo(s))."
                    )
            if reference_mode == "concat":
                raise IdgenError("reference_mode='concat' cannot be combined with `face_masks`; use 'mean'.")
        if isinstance(scale, (list, tuple)) and (face_masks is None or len(scale) != len(_as_list(face_masks))):
            raise IdgenError(
                "a list `scale` gives one scale per person and needs `face_masks` of the same length."
            )

    # ------------------------------------------------------------------ 2. identity

    def _analyze(self, photos, analyzer):

        if analyzer is None:
            analyzer = self.face_analyzer
        if analyzer is None:

            analyzer = get_face_analyzer()
        dim = getattr(analyzer, "embedding_dim", ID_EMBED_DIM)
        if dim != ID_EMBED_DIM:
            raise IdgenError(
                f"IP-Adapter-FaceID needs {ID_EMBED_DIM}-d ArcFace embeddings, but the face analyzer gives "
                f"{dim}-d; configure an insightface pack (antelopev2 / buffalo_l)."
            )
        images = [load_image(p) for p in _as_list(photos)]
        faces = [analyzer.get(image, select="largest") for image in images]
        return images, faces

    def _require_image_encoder(self):
        if getattr(self, "image_encoder", None) is None:
            raise IdgenError(
                "FaceID-Plus needs a CLIP image encoder for the face crop: `pipe.load_faceid(path, "
                "image_encoder=CLIPVisionModelWithProjection.from_pretrained(...))`, or pass "
                "`clip_image_embeds` and `negative_clip_image_embeds`."
            )
        self._ensure_clip_processor()

    def encode_face_crops(self, crops, device) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP hidden states[-2] `[N, T, C]` of aligned face crops, and of black images (the
        official negative: the encoder on `zeros_like` of the preprocessed crops)."""
        self._require_image_encoder()
        images = [c if isinstance(c, torch.Tensor) else np.asarray(c) for c in _as_list(crops)]
        return self.encode_image(images, device, 1, output_hidden_states=True)

    def _clip_branch(self, crops, clip, negative, n_embeds, reference_mode, device):
        """One person's Plus inputs `[I, T, C]` (positive, negative) from crops or hidden states."""
        if clip is None:
            if crops is None:
                raise IdgenError(
                    "FaceID-Plus needs the aligned face crop for its CLIP branch: pass `face_image` "
                    "(photos; cropped from their keypoints), `face_crop` or `clip_image_embeds`."
                )
            clip, negative = self.encode_face_crops(crops, device)
        else:
            clip = torch.as_tensor(clip)
            clip = clip[None] if clip.ndim == 2 else clip
            if negative is None:
                self._require_image_encoder()
                size = int(self.image_encoder.config.image_size)
                black = torch.zeros(1, 3, size, size, device=device, dtype=self.image_encoder.dtype)
                negative = self.image_encoder(black, output_hidden_states=True).hidden_states[-2]
            negative = torch.as_tensor(negative)
            negative = negative[None] if negative.ndim == 2 else negative
        width = self.faceid_spec.clip_dim
        if clip.ndim != 3 or clip.shape[-1] != width or negative.shape[-2:] != clip.shape[-2:]:
            raise IdgenError(
                f"clip_image_embeds has shape {tuple(clip.shape)} (negative {tuple(negative.shape)}); "
                f"expected [N, T, {width}] (CLIP image hidden states[-2] of each aligned face crop)."
            )
        clip = clip.to(device=device, dtype=torch.float32)
        negative = negative.to(device=device, dtype=torch.float32)
        if reference_mode != "concat":  # references of one person: average their CLIP features too
            return clip.mean(dim=0, keepdim=True), negative.mean(dim=0, keepdim=True)
        if clip.shape[0] != n_embeds:
            raise IdgenError(
                f"reference_mode='concat' pairs each embedding with its crop: got {n_embeds} "
                f"embeddings and {clip.shape[0]} crops."
            )
        return clip, negative[:1].expand_as(clip) if negative.shape[0] != clip.shape[0] else negative

    def encode_identity(
        self,
        face_embeds=None,
        face_image=None,
        face_crop=None,
        clip_image_embeds=None,
        negative_clip_image_embeds=None,
        *,
        reference_mode: ReferenceMode = "mean",
        multi_person: bool = False,
        face_analyzer=None,
        device=None,
    ) -> IdentityEmbeds:
        """Resolve the identity inputs into `IdentityEmbeds` (see `__call__` for the arguments;
        with `multi_person`, each input is a list with one entry per person)."""
        self._require_faceid()
        device = device or self._execution_device
        plus = self.faceid_spec.is_plus
        n_people = len(_as_list(face_embeds if face_embeds is not None else face_image)) if multi_person else 1

        def pick(value, i):
            return None if value is None else (value[i] if multi_person else value)

        rows, clips, negatives = [], [], []
        for i in range(n_people):
            person_embeds, photos = pick(face_embeds, i), pick(face_image, i)
            crops, clip = pick(face_crop, i), pick(clip_image_embeds, i)
            if photos is not None:
                images, person_embeds = self._analyze(photos, face_analyzer)
                if plus and crops is None and clip is None:
                    crops = [_face_crop(img, face.kps) for img, face in zip(images, person_embeds)]
            embeds = face_embeds_to_tensor(person_embeds, dim=ID_EMBED_DIM, normalize=True)
            if plus:
                clip, negative = self._clip_branch(
                    crops, clip, pick(negative_clip_image_embeds, i), embeds.shape[0], reference_mode, device
                )
                clips.append(clip)
                negatives.append(negative)
            rows.append(combine_references(embeds, reference_mode))
        return IdentityEmbeds(
            embeds=torch.cat(rows).to(device),
            clip=torch.cat(clips) if plus else None,
            negative_clip=torch.cat(negatives) if plus else None,
        )

    def _negative_identity(self, embeds: torch.Tensor, strength: float, generator) -> torch.Tensor:
        """Official negative: a zero embedding. With `strength` > 0: `strength` times a random unit
        vector, drawn from a generator seeded by `generator.initial_seed()` (the latents' random
        stream is left untouched)."""
        negative = torch.zeros_like(embeds)
        if strength > 0:
            first = generator[0] if isinstance(generator, (list, tuple)) else generator
            seed = first.initial_seed() if first is not None else torch.seed()
            noise = torch.randn(embeds.shape, generator=torch.Generator("cpu").manual_seed(seed))
            negative = strength * torch.nn.functional.normalize(noise, dim=-1).to(embeds.device)
        return negative

    def _identity_window(self, callback, start: float, end: float, first_total: int):
        """Switch the identity branch on only for the steps in `[start, end]`: scales are set for
        step 0 now, and for step i+1 in a callback run after step i (chained after `callback`)."""
        active = self.get_faceid_scales()
        off = {n: ([0.0] * len(s) if isinstance(s, list) else 0.0) for n, s in active.items()}

        def apply(step: int, total: int) -> None:
            self._set_faceid_scales(active if in_window(step, total, start, end) else off)

        apply(0, first_total)

        def on_step_end(pipe, step, timestep, callback_kwargs):
            out = callback(pipe, step, timestep, callback_kwargs) if callback is not None else {}
            total = getattr(pipe, "_num_timesteps", first_total)  # set by the base pipeline
            if step + 1 < total:
                apply(step + 1, total)
            return {} if out is None else out

        return on_step_end

    # ------------------------------------------------------------------ 3. the call

    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[str, list[str], None] = None,
        face_embeds: Optional[FaceInput] = None,
        face_image=None,
        *,
        face_crop=None,
        clip_image_embeds: Optional[torch.Tensor] = None,
        negative_clip_image_embeds: Optional[torch.Tensor] = None,
        face_masks: Optional[Sequence] = None,
        reference_mode: ReferenceMode = "mean",
        scale: Union[float, dict, list[float], None] = None,
        s_scale: Optional[float] = None,
        shortcut: Optional[bool] = None,
        identity_start: float = 0.0,
        identity_end: float = 1.0,
        negative_noise: float = 0.0,
        face_analyzer=None,
        negative_prompt: Union[str, list[str], None] = None,
        num_inference_steps: int = 30,
        guidance_scale: Optional[float] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        num_images_per_prompt: int = 1,
        generator: Union[torch.Generator, list[torch.Generator], None] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Optional[Callable] = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        cross_attention_kwargs: Optional[dict] = None,
        **kwargs,
    ):
        r"""Generate images of the person in `face_embeds` / `face_image`.

        Args:
            prompt: the text prompt(s), as in diffusers.
            face_embeds: identity as ArcFace embedding(s): an array/tensor `[512]` or `[N, 512]` (N
                reference photos of one person; L2-normalised here), a `Face`, or a list of them.
                With `face_masks`: a list with one such entry per person.
            face_image: twin of `face_embeds`: photo(s) (path, PIL, array); the largest face of
                each is analysed (`face_analyzer`, else `pipe.face_analyzer`, else idgen's default
                analyzer). For Plus, its aligned 224 crop (from the 5 keypoints) feeds CLIP.
            face_crop: Plus only: already aligned face crop(s) for CLIP (with `face_embeds`).
            clip_image_embeds / negative_clip_image_embeds: Plus only: twins of `face_crop`: CLIP
                hidden states[-2] `[N, T, C]` of the crops / of a black image (the latter is
                computed with the image encoder when omitted).
            face_masks: several people in one image: one mask per person (PIL/array/tensor,
                white = where that identity goes), handled by diffusers' `IPAdapterMaskProcessor`.
            reference_mode: N references of one person: "mean" (official: average the
                embeddings), "normed_mean", or "concat" (4 tokens per reference, concatenated).
            scale: identity scale for this call (float, per-block dict as in `set_faceid_scale`,
                or with `face_masks` a list with one float per person); default: the pipeline's
                (1.0 after `load_faceid`).
            s_scale / shortcut: Plus only: CLIP-branch weight (default 1.0) and shortcut (default:
                True for Plus v2, False for v1), as in the official `generate`.
            identity_start / identity_end: fractions of the denoising steps in which the identity
                branch is on (diffusers' `control_guidance_start/end` convention); the LoRA
                stays on throughout, as in the official code.
            negative_noise: 0 (official) uses a zero embedding for the negative identity tokens;
                s > 0 uses s times a random unit vector (seeded from `generator`).
            num_inference_steps: default 30 (official `generate`).
            guidance_scale: default 7.5 (SD1.5) / 5.0 (SDXL), as the official `generate`.
            kwargs: any other argument of the base diffusers pipeline's `__call__` (`latents`,
                `prompt_embeds`, `eta`, `guidance_rescale`, `clip_skip`, `timesteps`, SDXL's
                `prompt_2`, ...).

        Returns:
            The base pipeline's output (`images`), or a tuple with `return_dict=False`.
        """
        # 0. Defaults; without an adapter (e.g. after `unload_faceid`) this is the base pipeline
        guidance_scale = self._default_guidance_scale if guidance_scale is None else guidance_scale
        if isinstance(prompt, (list, tuple)) and isinstance(negative_prompt, str):
            # as the official generate; diffusers refuses a str negative with a list prompt
            negative_prompt = [negative_prompt] * len(prompt)
        base_args = dict(
            prompt=prompt, negative_prompt=negative_prompt, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, height=height, width=width, num_images_per_prompt=num_images_per_prompt,
            generator=generator, output_type=output_type, return_dict=return_dict,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        if self._faceid is None and face_embeds is None and face_image is None:
            return super().__call__(**base_args, cross_attention_kwargs=cross_attention_kwargs, **kwargs)
        state = self._require_faceid()
        spec = self.faceid_spec

        # 1. Check inputs
        self.check_faceid_inputs(face_embeds, face_image, face_crop, clip_image_embeds, negative_clip_image_embeds,
                                 face_masks, reference_mode, scale, identity_start, identity_end,
                                 negative_noise, kwargs)
        device = self._execution_device
        dtype = self.unet.dtype
        do_cfg = guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None

        # 2. Identity embeddings (one row per identity "image" of the IP branch)
        identity = self.encode_identity(
            face_embeds, face_image, face_crop, clip_image_embeds, negative_clip_image_embeds,
            reference_mode=reference_mode, multi_person=face_masks is not None,
            face_analyzer=face_analyzer, device=device,
        )
        if prompt is not None:
            batch_size = 1 if isinstance(prompt, str) else len(prompt)
        elif kwargs.get("prompt_embeds") is not None:
            batch_size = kwargs["prompt_embeds"].shape[0]
        else:
            batch_size = 1  # the base pipeline reports the missing prompt
        positive = identity.embeds[None].expand(batch_size, -1, -1)
        negative = self._negative_identity(identity.embeds, negative_noise, generator)
        negative = negative[None].expand(batch_size, -1, -1)
        id_embeds = torch.cat([negative, positive]) if do_cfg else positive
        ip_adapter_image_embeds = [id_embeds.to(device=device, dtype=dtype)]

        # 3. Masks for several people
        cross_attention_kwargs = dict(cross_attention_kwargs or {})
        if face_masks is not None:
            from diffusers.image_processor import IPAdapterMaskProcessor

            h = height or self.unet.config.sample_size * self.vae_scale_factor
            w = width or self.unet.config.sample_size * self.vae_scale_factor
            masks = IPAdapterMaskProcessor().preprocess(_as_list(face_masks), height=h, width=w)
            cross_attention_kwargs["ip_adapter_masks"] = [masks.reshape(1, -1, masks.shape[-2], masks.shape[-1])]

        # 4. Identity scale, step window and the Plus CLIP branch (all restored afterwards)
        saved_scales = self.get_faceid_scales()
        projection = state.projection
        try:
            if isinstance(scale, (list, tuple)):  # one scale per masked person
                self._set_faceid_scales({n: [float(v) for v in scale] for n in saved_scales})
            elif scale is not None:
                self.set_faceid_scale(scale)
            if identity_start > 0.0 or identity_end < 1.0:
                if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
                    callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
                callback_on_step_end = self._identity_window(
                    callback_on_step_end, identity_start, identity_end,
                    first_total=_count(kwargs.get("timesteps"), kwargs.get("sigmas"), num_inference_steps),
                )

            if spec.is_plus:
                repeat = batch_size * num_images_per_prompt
                clip = [identity.clip[None]] * repeat
                if do_cfg:
                    clip = [identity.negative_clip[None]] * repeat + clip
                projection.clip_embeds = torch.cat(clip).to(device=device, dtype=dtype)
                projection.shortcut = state.shortcut if shortcut is None else bool(shortcut)
                projection.shortcut_scale = state.s_scale if s_scale is None else float(s_scale)

            # 5. Denoise with the base pipeline (identity tokens through diffusers' IP-Adapter path)
            base_args.update(callback_on_step_end=callback_on_step_end,
                             callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs)
            return super().__call__(
                **base_args,
                cross_attention_kwargs=cross_attention_kwargs or None,
                ip_adapter_image_embeds=ip_adapter_image_embeds,
                **kwargs,
            )
        finally:
            self._set_faceid_scales(saved_scales)
            if spec.is_plus:
                projection.clip_embeds = None


class FaceIDPipeline(FaceIDLoaderMixin, FaceIDCallMixin, StableDiffusionPipeline):
    r"""IP-Adapter-FaceID / FaceID-Plus (v1, v2) on Stable Diffusion 1.5.

    A `StableDiffusionPipeline` with `load_faceid` / `set_faceid_scale` / `unload_faceid` and a
    `__call__` that takes the identity (`face_embeds` or `face_image`). Components are diffusers':

    Args:
        vae (`AutoencoderKL`): image <-> latents.
        text_encoder (`CLIPTextModel`), tokenizer (`CLIPTokenizer`): the prompt.
        unet (`UNet2DConditionModel`): the denoiser; `load_faceid` adds the identity projection
            (`unet.encoder_hid_proj`), IP attention processors and the `"faceid"` LoRA to it.
        scheduler: any diffusers scheduler.
        safety_checker, feature_extractor: optional, as in diffusers (`feature_extractor` also
            preprocesses the Plus face crop; made for you when missing).
        image_encoder (`CLIPVisionModelWithProjection`, optional): FaceID-Plus's CLIP ViT-H.
    """

    _default_guidance_scale = 7.5

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, safety_checker=None,
                 feature_extractor=None, image_encoder=None, requires_safety_checker: bool = False):
        super().__init__(vae, text_encoder, tokenizer, unet, scheduler, safety_checker, feature_extractor,
                         image_encoder=image_encoder, requires_safety_checker=requires_safety_checker)


class FaceIDXLPipeline(FaceIDLoaderMixin, FaceIDCallMixin, StableDiffusionXLPipeline):
    r"""IP-Adapter-FaceID / FaceID-Plus on Stable Diffusion XL (`ip-adapter-faceid_sdxl.bin`: 4
    tokens of width 2048). Same API as `FaceIDPipeline`; components as `StableDiffusionXLPipeline`
    (two text encoders and tokenizers), plus the optional `image_encoder` for Plus."""

    _default_guidance_scale = 5.0


class FaceIDInpaintPipeline(FaceIDLoaderMixin, FaceIDCallMixin, StableDiffusionInpaintPipeline):
    r"""IP-Adapter-FaceID identity inpainting on a Stable Diffusion 1.5 inpainting UNet (9 input
    channels; a 4-channel UNet uses diffusers' latent-blend rule). Same identity arguments as
    `FaceIDPipeline`; `image`, `mask_image`, `strength`, ... as `StableDiffusionInpaintPipeline`."""

    _default_guidance_scale = 7.5

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, safety_checker=None,
                 feature_extractor=None, image_encoder=None, requires_safety_checker: bool = False):
        super().__init__(vae, text_encoder, tokenizer, unet, scheduler, safety_checker, feature_extractor,
                         image_encoder=image_encoder, requires_safety_checker=requires_safety_checker)


class FaceIDInpaintXLPipeline(FaceIDLoaderMixin, FaceIDCallMixin, StableDiffusionXLInpaintPipeline):
    r"""IP-Adapter-FaceID identity inpainting on an SDXL inpainting UNet (see `FaceIDXLPipeline`)."""

    _default_guidance_scale = 5.0
