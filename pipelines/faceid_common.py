"""What the IP-Adapter-FaceID pipelines share (not a pipeline module).

- `FaceIDPipelineMixin`: identity inputs -> identity embeddings -> diffusers' native IP-Adapter
  call (`_generate`), on top of `FaceIDLoaderMixin` (loading; all adapter state lives in the UNet).
- `StableDiffusionFaceIDMixin`: the SD1.5 pipelines' `__init__`.

Each pipeline's `__call__` (in its own module) has diffusers' explicit signature plus the identity
arguments and hands its arguments to `_generate`. The denoising loop is the base diffusers
pipeline's own, so schedulers, callbacks, offload, LoRAs, `output_type` etc. behave as in diffusers.

The math is the official `IPAdapterFaceID.generate` / `IPAdapterFaceIDPlus.generate`: identity
tokens are the projection of the normalised ArcFace embedding, negative identity tokens the
projection of a zero embedding (and, for Plus, of the CLIP hidden states of a black image), the
rank-128 LoRA is always on, and the identity branch is added with weight `identity_scale`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import IPAdapterMaskProcessor
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from idgen.acceleration.mixin import AccelerationMixin
from idgen.adapters.faceid.config import ID_EMBED_DIM
from idgen.adapters.faceid.loader import FaceIDLoaderMixin, ScaleConfig, get_faceid_state
from idgen.adapters.style.loader import get_style_adapter, set_ip_scale
from idgen.deprecation import take_renamed
from idgen.errors import IdgenError
from idgen.face import align_face, get_face_analyzer
from idgen.identity import FaceEmbedsInput, ReferenceMode, in_window, resolve_face_embeds
from idgen.image_io import load_image
from idgen.validation import check_sampling_arguments

#: Keys an entry of `identities=[...]` may have (the first five: one person's identity inputs).
IDENTITY_KEYS = ("face_embeds", "face_image", "face_crop", "clip_image_embeds", "negative_clip_image_embeds",
                 "mask", "scale")
PERSON_INPUTS = IDENTITY_KEYS[:5]


@dataclass
class IdentityEmbeds:
    """What the identity branch gets for one call (before CFG and batching).

    `embeds` `[I, 512]` (normalised ArcFace) and, for Plus, `clip` / `negative_clip` `[I, T, C]`
    (CLIP hidden states[-2] of the aligned crops / of a black image). I is 1 (one person,
    references averaged), N (references concatenated) or P (one per person of `identities`).
    """

    embeds: torch.Tensor
    clip: Optional[torch.Tensor] = None
    negative_clip: Optional[torch.Tensor] = None


@dataclass
class FaceIDArguments:
    """The identity arguments of a FaceID `__call__` (documented in `FaceIDPipelineMixin`)."""

    face_embeds: Optional[FaceEmbedsInput] = None
    face_image: Any = None
    face_crop: Any = None
    clip_image_embeds: Optional[torch.Tensor] = None
    negative_clip_image_embeds: Optional[torch.Tensor] = None
    identities: Optional[Sequence[Mapping[str, Any]]] = None
    reference_mode: Optional[ReferenceMode] = None
    identity_scale: Optional[ScaleConfig] = None
    identity_start: float = 0.0
    identity_end: float = 1.0
    negative_noise: float = 0.0
    s_scale: Optional[float] = None
    shortcut: Optional[bool] = None
    face_analyzer: Any = None

    @classmethod
    def take(cls, arguments: dict) -> "FaceIDArguments":
        """Pop the identity arguments from a call's `arguments`, the old names too (FutureWarning):
        `scale` (now `identity_scale`) and `face_masks` with per-person lists (now `identities`)."""
        args = cls(**{f.name: arguments.pop(f.name) for f in fields(cls) if f.name in arguments})
        args.identity_scale = take_renamed(arguments, "scale", "identity_scale", args.identity_scale)
        if "face_masks" in arguments:
            masks = list(take_renamed(arguments, "face_masks", "identities", args.identities))
            args.identities = [{"mask": mask} for mask in masks]
            per_person = {name: getattr(args, name) for name in PERSON_INPUTS + ("identity_scale",)}
            for name, values in per_person.items():
                if values is None or (name == "identity_scale" and not isinstance(values, (list, tuple))):
                    continue
                if not isinstance(values, (list, tuple)) or len(values) != len(masks):
                    raise IdgenError(f"with `face_masks` ({len(masks)} masks), `{name}` must be a list with one "
                                     "entry per person; better, give `identities=[{...}, ...]`.")
                for person, value in zip(args.identities, values):
                    person["scale" if name == "identity_scale" else name] = value
                setattr(args, name, None)
        return args

    @property
    def given(self) -> bool:
        """Whether the call names a person at all."""
        return any(getattr(self, name) is not None for name in PERSON_INPUTS + ("identities",))


def _count(timesteps, sigmas, num_inference_steps: int) -> int:
    """Number of denoising steps the base pipeline will run (custom `timesteps`/`sigmas` win)."""
    for custom in (timesteps, sigmas):
        if custom is not None:
            return len(custom)
    return num_inference_steps


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _reference_mode(mode: Optional[ReferenceMode], spec) -> ReferenceMode:
    """The call's `reference_mode`; by default "concat" for FaceID-Portrait (made for several photos of
    one person concatenated: the official `n_cond`), else "mean"."""
    if mode is not None:
        return mode
    return "concat" if spec.variant == "faceid-portrait" else "mean"


def _face_crop(image: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """The aligned face crop FaceID-Plus feeds to CLIP (insightface `norm_crop`, 224 px)."""
    return np.asarray(align_face(image, kps, size=224).image)


class FaceIDPipelineMixin(AccelerationMixin, FaceIDLoaderMixin):
    r"""The identity part of every FaceID pipeline's `__call__`.

    Identity arguments (the same in every FaceID pipeline):
        face_embeds: identity as ArcFace embedding(s): an array/tensor `[512]` or `[N, 512]` (N
            reference photos of one person; L2-normalised here), a `Face`, or a list of them.
        face_image: twin of `face_embeds`: photo(s) (path, PIL, array); the largest face of each
            is analysed (`face_analyzer`, else `pipe.face_analyzer`, else idgen's default
            analyzer). For Plus, its aligned 224 crop (from the 5 keypoints) feeds CLIP.
        face_crop: Plus only: already aligned face crop(s) for CLIP (with `face_embeds`).
        clip_image_embeds / negative_clip_image_embeds: Plus only: twins of `face_crop`: CLIP
            hidden states[-2] `[N, T, C]` of the crops / of a black image (the latter is computed
            with the image encoder when omitted).
        identities: several people in one image: one dict per person with keys among
            `IDENTITY_KEYS` (the inputs above for that person, its `mask`: PIL/array/tensor, white =
            where that identity goes, handled by diffusers' `IPAdapterMaskProcessor`, and an
            optional float `scale`); instead of the single-person inputs.
        reference_mode: N references of one person: "mean" (official FaceID: average the embeddings),
            "normed_mean", or "concat" (the tokens of each reference concatenated; one person only).
            Default: "concat" for FaceID-Portrait (official `n_cond`: 16 tokens per photo), else "mean".
        identity_scale: identity scale for this call (float or per-block dict as in
            `set_faceid_scale`); default: the pipeline's (1.0 after `load_faceid`). Old name `scale`.
        identity_start / identity_end: fractions of the denoising steps in which the identity
            branch is on (diffusers' `control_guidance_start/end` convention); the LoRA stays on
            throughout, as in the official code.
        negative_noise: 0 (official) uses a zero embedding for the negative identity tokens; s > 0
            uses s times a random unit vector (seeded from `generator`).
        s_scale / shortcut: Plus only: CLIP-branch weight (default 1.0) and shortcut (default:
            True for Plus v2, False for v1), as in the official `generate`.
        face_analyzer: the `idgen.face.FaceAnalyzer` for `face_image` in this call.
        ip_adapter_image / ip_adapter_image_embeds: only with a style adapter loaded
            (`load_style_adapter`): the style reference image(s) (InstantStyle), or its embeds in
            diffusers' layout for that one adapter (`[2, n, E]` negative then positive with CFG). Without
            either, the loaded style adapter is off for the call (exactly).

    Old multi-person form, one release: `face_embeds=[...]`, `face_masks=[...]`, `scale=[...]`
    (one entry per person) -> `identities` (FutureWarning).
    """

    face_analyzer = None  # optional `idgen.face.FaceAnalyzer` used for `face_image`

    # ------------------------------------------------------------------ 1. inputs

    def check_identity_inputs(self, args: FaceIDArguments) -> list[dict]:
        """Validate the identity arguments; returns the people, one dict (`IDENTITY_KEYS`) each."""
        spec = self._require_faceid().spec
        plus = spec.is_plus
        args.reference_mode = _reference_mode(args.reference_mode, spec)
        if not args.given:
            raise IdgenError(
                "IP-Adapter-FaceID is loaded in this pipeline's UNet: give exactly one of `face_embeds` and "
                "`face_image` (or `identities` for several people), or call `unload_faceid()` for the plain pipeline."
            )
        if args.reference_mode not in ("mean", "normed_mean", "concat"):
            raise IdgenError(f"reference_mode must be 'mean', 'normed_mean' or 'concat', got {args.reference_mode!r}.")
        in_window(0, 1, args.identity_start, args.identity_end)  # validates the fractions
        if args.negative_noise < 0:
            raise IdgenError(f"negative_noise must be >= 0, got {args.negative_noise}.")
        if isinstance(args.identity_scale, (list, tuple)):
            raise IdgenError("`identity_scale` is a float or a per-block dict; give one scale per person as "
                             "`identities=[{..., 'scale': s}, ...]`.")
        people = self._people(args)
        for i, person in enumerate(people):
            what = f"identities[{i}]: " if args.identities is not None else ""
            if (person.get("face_embeds") is None) == (person.get("face_image") is None):
                raise IdgenError(f"{what}give exactly one of `face_embeds` (embeddings or Face records) and "
                                 "`face_image` (photos).")
            crop, clip = person.get("face_crop"), person.get("clip_image_embeds")
            if not plus and (crop is not None or clip is not None):
                raise IdgenError(f"{what}`face_crop` / `clip_image_embeds` are for FaceID-Plus; the loaded adapter "
                                 "is plain FaceID.")
            if crop is not None and clip is not None:
                raise IdgenError(f"{what}give at most one of `face_crop` and `clip_image_embeds`.")
            if person.get("negative_clip_image_embeds") is not None and clip is None:
                raise IdgenError(f"{what}`negative_clip_image_embeds` goes with `clip_image_embeds`.")
            if person.get("scale") is not None and not isinstance(person["scale"], (int, float)):
                raise IdgenError(f"{what}'scale' must be a float, got {type(person['scale']).__name__}.")
        if args.reference_mode == "concat" and (len(people) > 1 or people[0].get("mask") is not None):
            raise IdgenError("reference_mode='concat' cannot be combined with several people or masks; use 'mean'.")
        return people

    @staticmethod
    def _people(args: FaceIDArguments) -> list[dict]:
        if args.identities is None:
            return [{name: getattr(args, name) for name in PERSON_INPUTS}]
        if any(getattr(args, name) is not None for name in PERSON_INPUTS):
            raise IdgenError("Give either `identities` (one dict per person) or the single-person inputs "
                             "(`face_embeds`, `face_image`, ...), not both.")
        people = args.identities
        if isinstance(people, Mapping) or not isinstance(people, (list, tuple)) or not people:
            raise IdgenError("`identities` must be a non-empty list of dicts (one per person).")
        for i, person in enumerate(people):
            if not isinstance(person, Mapping) or set(person) - set(IDENTITY_KEYS):
                raise IdgenError(f"identities[{i}] must be a dict with keys among {IDENTITY_KEYS}.")
            if len(people) > 1 and person.get("mask") is None:
                raise IdgenError(f"identities[{i}] needs a 'mask': with several people each identity needs its region.")
        return [dict(person) for person in people]

    # ------------------------------------------------------------------ 2. identity

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
        face_embeds: Optional[FaceEmbedsInput] = None,
        face_image=None,
        face_crop=None,
        clip_image_embeds: Optional[torch.Tensor] = None,
        negative_clip_image_embeds: Optional[torch.Tensor] = None,
        *,
        identities: Optional[Sequence[Mapping[str, Any]]] = None,
        reference_mode: Optional[ReferenceMode] = None,
        face_analyzer=None,
        device=None,
    ) -> IdentityEmbeds:
        """Resolve one person's identity inputs, or `identities` (one dict per person), into
        `IdentityEmbeds` (arguments as in `__call__`). Embeddings go through
        `idgen.identity.resolve_face_embeds`, photos through the face analyzer."""
        spec = self._require_faceid().spec
        plus, reference_mode = spec.is_plus, _reference_mode(reference_mode, spec)
        device = device or self._execution_device
        people = identities if identities is not None else [dict(
            face_embeds=face_embeds, face_image=face_image, face_crop=face_crop, clip_image_embeds=clip_image_embeds,
            negative_clip_image_embeds=negative_clip_image_embeds,
        )]
        analyzer = face_analyzer if face_analyzer is not None else self.face_analyzer
        if analyzer is None and any(person.get("face_image") is not None for person in people):
            analyzer = get_face_analyzer()
        rows, clips, negatives = [], [], []
        for person in people:
            photos = person.get("face_image")
            images = None if photos is None else [load_image(p) for p in _as_list(photos)]
            embeds = resolve_face_embeds(person.get("face_embeds"), images, analyzer=analyzer, dim=ID_EMBED_DIM,
                                         normalize=True, reference_mode=reference_mode)
            rows.append(embeds)
            if plus:
                crops, clip = person.get("face_crop"), person.get("clip_image_embeds")
                if images is not None and crops is None and clip is None:  # the analyser caches per image
                    crops = [_face_crop(image, analyzer.get(image, select="largest").kps) for image in images]
                clip, negative = self._clip_branch(
                    crops, clip, person.get("negative_clip_image_embeds"), embeds.shape[0], reference_mode, device
                )
                clips.append(clip)
                negatives.append(negative)
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

    def _generate(self, call_arguments: dict):
        """The FaceID call. `call_arguments`: the pipeline `__call__`'s `locals()` (diffusers'
        pipelines read them the same way for callbacks): the identity arguments, the base diffusers
        pipeline's, and in `kwargs` the base's others and old names. The base pipeline denoises, with
        the identity tokens through its IP-Adapter path. Without an adapter in the UNet (e.g. after
        `unload_faceid`) and without identity inputs, this is the base pipeline exactly."""
        arguments = {k: v for k, v in call_arguments.items() if k not in ("self", "kwargs")}
        arguments.update(call_arguments.get("kwargs", {}))
        args = FaceIDArguments.take(arguments)
        style = get_style_adapter(self.unet)
        style_image, style_embeds = arguments.pop("ip_adapter_image", None), arguments.pop("ip_adapter_image_embeds", None)
        for name, value in (("ip_adapter_image", style_image), ("ip_adapter_image_embeds", style_embeds)):
            if value is not None and style is None:
                raise IdgenError(f"`{name}` is set by the FaceID pipeline from the identity inputs; do not pass it "
                                 "(for a style reference image, load a style adapter: `pipe.load_style_adapter(...)`).")
        prompt, negative_prompt = arguments.get("prompt"), arguments.get("negative_prompt")
        if isinstance(prompt, (list, tuple)) and isinstance(negative_prompt, str):
            # as the official generate; diffusers refuses a str negative with a list prompt
            arguments["negative_prompt"] = [negative_prompt] * len(prompt)
        check_sampling_arguments(arguments)
        device = self._execution_device
        dtype = self.unet.dtype
        do_cfg = arguments["guidance_scale"] > 1 and self.unet.config.time_cond_proj_dim is None
        if prompt is not None:
            batch_size = 1 if isinstance(prompt, str) else len(prompt)
        elif arguments.get("prompt_embeds") is not None:
            batch_size = arguments["prompt_embeds"].shape[0]
        else:
            batch_size = 1  # the base pipeline reports the missing prompt
        style_off = False
        if style is not None:  # the style reference: the UNet's last IP-Adapter (InstantStyle)
            style_entry, style_off = self.style_call_embeds(style_image, style_embeds, batch_size, do_cfg, device, dtype)
        if get_faceid_state(self.unet) is None and not args.given:
            if style is not None:
                arguments["ip_adapter_image_embeds"] = [style_entry]
            with self.style_off(style_off):
                return super().__call__(**arguments)
        state = self._require_faceid()

        # 1. Check inputs
        people = self.check_identity_inputs(args)

        # 2. Identity embeddings (one row per identity "image" of the IP branch), then the style's
        identity = self.encode_identity(identities=people, reference_mode=args.reference_mode,
                                        face_analyzer=args.face_analyzer, device=device)
        positive = identity.embeds[None].expand(batch_size, -1, -1)
        negative = self._negative_identity(identity.embeds, args.negative_noise, arguments.get("generator"))
        negative = negative[None].expand(batch_size, -1, -1)
        id_embeds = torch.cat([negative, positive]) if do_cfg else positive
        arguments["ip_adapter_image_embeds"] = [id_embeds.to(device=device, dtype=dtype)]
        if style is not None:
            arguments["ip_adapter_image_embeds"].append(style_entry)

        # 3. Masks for several people
        masks = [person["mask"] for person in people if person.get("mask") is not None]
        if masks:
            h = arguments.get("height") or self.unet.config.sample_size * self.vae_scale_factor
            w = arguments.get("width") or self.unet.config.sample_size * self.vae_scale_factor
            masks = IPAdapterMaskProcessor().preprocess(masks, height=h, width=w)
            arguments["cross_attention_kwargs"] = {
                **(arguments.get("cross_attention_kwargs") or {}),
                "ip_adapter_masks": [masks.reshape(1, -1, masks.shape[-2], masks.shape[-1])] + [None] * (style is not None),
            }

        # 4. Identity scales, step window and the Plus CLIP branch (all restored afterwards)
        saved_scales = self.get_faceid_scales()
        try:
            if args.identity_scale is not None:  # for this call only: not the configured scale
                set_ip_scale(self.unet, 0, args.identity_scale)
            if any(person.get("scale") is not None for person in people):
                # one scale per masked person (diffusers' per-mask list); people without one keep the call's
                self._set_faceid_scales({
                    name: [scale if person.get("scale") is None else float(person["scale"]) for person in people]
                    for name, scale in self.get_faceid_scales().items()
                })
            if args.identity_start > 0.0 or args.identity_end < 1.0:
                callback = arguments.get("callback_on_step_end")
                if isinstance(callback, (PipelineCallback, MultiPipelineCallbacks)):
                    arguments["callback_on_step_end_tensor_inputs"] = callback.tensor_inputs
                steps = _count(arguments.get("timesteps"), arguments.get("sigmas"), arguments["num_inference_steps"])
                arguments["callback_on_step_end"] = self._identity_window(
                    callback, args.identity_start, args.identity_end, first_total=steps
                )
            if state.spec.is_plus:
                repeat = batch_size * arguments.get("num_images_per_prompt", 1)
                clip = [identity.clip[None]] * repeat
                if do_cfg:
                    clip = [identity.negative_clip[None]] * repeat + clip
                state.projection.clip_embeds = torch.cat(clip).to(device=device, dtype=dtype)
                state.projection.shortcut = state.shortcut if args.shortcut is None else bool(args.shortcut)
                state.projection.shortcut_scale = state.s_scale if args.s_scale is None else float(args.s_scale)

            # 5. Denoise with the base pipeline
            with self.style_off(style_off):
                return super().__call__(**arguments)
        finally:
            self._set_faceid_scales(saved_scales)
            if state.spec.is_plus:
                state.projection.clip_embeds = None


class StableDiffusionFaceIDMixin(FaceIDPipelineMixin):
    """The SD1.5 FaceID pipelines (text-to-image and inpainting): their `__init__`, diffusers' with
    the safety checker optional and off by default."""

    def __init__(
        self, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers, safety_checker: Optional[StableDiffusionSafetyChecker] = None,
        feature_extractor: Optional[CLIPImageProcessor] = None,
        image_encoder: Optional[CLIPVisionModelWithProjection] = None, requires_safety_checker: bool = False,
    ):
        super().__init__(vae, text_encoder, tokenizer, unet, scheduler, safety_checker, feature_extractor,
                         image_encoder=image_encoder, requires_safety_checker=requires_safety_checker)
