"""InstantID for Stable Diffusion XL: identity tokens from an ArcFace embedding (Resampler), decoupled
identity cross-attention in every UNet cross-attention, and the IdentityNet (a ControlNet fed with
the face keypoint image and, as its cross-attention context, the identity tokens).

Same math and checkpoints as the official `pipeline_stable_diffusion_xl_instantid.py`: the official
`ip-adapter.bin` and IdentityNet folder load unchanged, and with the same inputs the output matches
the official implementation (see `tests/test_instantid_sdxl.py`, parity case).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import PIL.Image
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import PipelineImageInput
from diffusers.models import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from diffusers.pipelines.controlnet.pipeline_controlnet_sd_xl import (
    StableDiffusionXLControlNetPipeline,
    retrieve_timesteps,
)
from diffusers.pipelines.stable_diffusion_xl.pipeline_output import StableDiffusionXLPipelineOutput
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import logging, replace_example_docstring
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from idgen.adapters.instantid.attention import IdentityAttentionInputs
from idgen.adapters.instantid.loader import DEFAULT_IDENTITY_SCALE, InstantIDLoaderMixin, expand_identity_scale
from idgen.adapters.instantid.model import InstantIDAdapter
from idgen.identity import FaceEmbedsInput, ReferenceMode
from idgen.errors import IdgenError
from idgen.face.types import Face
from idgen.identity import in_window, resolve_face_embeds
from idgen.conditioning import draw_kps, resize_kps
from idgen.face import get_face_analyzer

logger = logging.get_logger(__name__)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from diffusers import ControlNetModel
        >>> from idgen.pipelines.pipeline_stable_diffusion_xl_instantid import InstantIDPipeline
        >>> from idgen.image_io import load_image

        >>> controlnet = ControlNetModel.from_pretrained("checkpoints/ControlNetModel", torch_dtype=torch.float16)
        >>> pipe = InstantIDPipeline.from_pretrained(
        ...     "stabilityai/stable-diffusion-xl-base-1.0", controlnet=controlnet, torch_dtype=torch.float16
        ... ).to("cuda")
        >>> pipe.load_instantid("checkpoints/ip-adapter.bin")

        >>> photo = load_image("me.jpg")  # the face photo: embedding + (by default) keypoints
        >>> image = pipe("analog film photo of a man", face_image=photo, negative_prompt="lowres").images[0]
        >>> pipe.save_pretrained("my-instantid")  # adapter included; from_pretrained restores it
        ```
"""

# Keys an entry of `identities=[...]` may have.
IDENTITY_KEYS = ("face_embeds", "face_image", "mask", "kps", "scale")


@dataclass
class Identity:
    """One person of a call, resolved: embeddings `[N, D]` (CPU float32) plus where and how much."""

    embeds: torch.Tensor
    kps: Optional[np.ndarray] = None  # [5, 2] pixels in `kps_size` (w, h); None = output pixels
    kps_size: Optional[tuple[int, int]] = None
    mask: Optional[torch.Tensor] = None  # [1, 1, H, W] float in [0, 1]
    scale: Any = None  # float | block dict | None (the call's / configured scale)


def _first_face(face_embeds) -> Optional[Face]:
    items = face_embeds if isinstance(face_embeds, (list, tuple)) else [face_embeds]
    return next((f for f in items if isinstance(f, Face)), None)


def _mask_to_tensor(mask, what: str) -> torch.Tensor:
    """PIL / array / tensor `[H, W]` (or `[1, H, W]`, `[1, 1, H, W]`) -> `[1, 1, H, W]` float32."""
    if isinstance(mask, PIL.Image.Image):
        t = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)
    elif isinstance(mask, (np.ndarray, torch.Tensor)):
        t = torch.as_tensor(mask).detach().to("cpu")
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        t = t.float()
    else:
        raise IdgenError(f"{what} must be a PIL image, array or tensor, got {type(mask).__name__}.")
    while t.ndim > 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise IdgenError(f"{what} must be one 2-D mask [H, W]; got shape {tuple(t.shape)}.")
    if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
        raise IdgenError(f"{what} values must lie in [0, 1] (or 0..255 as uint8).")
    return t[None, None]


class InstantIDPipelineMixin(InstantIDLoaderMixin):
    """Call-time identity logic shared by the SDXL and SD1.5 InstantID pipelines."""

    face_analyzer = None  # an idgen.face.FaceAnalyzer for `face_image=`/`pose_image=`; None = default

    def _restore_identity_branch(self, identity_scale) -> None:
        """In `__init__`: re-create the identity processors from a loaded `identity_adapter`."""
        if getattr(self, "identity_adapter", None) is not None:
            self._install_identity_processors()
            self.set_ip_adapter_scale(identity_scale)

    def _analyzer(self):
        if self.face_analyzer is None:

            self.face_analyzer = get_face_analyzer()
        return self.face_analyzer

    def _analyze(self, photo, what: str) -> Face:
        try:
            return self._analyzer().get(photo, select="largest")
        except IdgenError as e:
            raise type(e)(f"{what}: {e}") from None

    # -- inputs -----------------------------------------------------------------------------
    def resolve_identities(
        self,
        face_embeds: Optional[FaceEmbedsInput] = None,
        face_image=None,
        identities: Optional[Sequence[Mapping[str, Any]]] = None,
        reference_mode: ReferenceMode = "mean",
    ) -> list[Identity]:
        """Turn `face_embeds` / `face_image` (one person) or `identities` (one dict per person)
        into `Identity` records. Raises `IdgenError` naming the offending argument."""
        dim = self.identity_adapter.embedding_dim
        if identities is not None:
            if face_embeds is not None or face_image is not None:
                raise IdgenError("Give either `identities` or `face_embeds`/`face_image`, not both.")
            if isinstance(identities, Mapping) or not isinstance(identities, (list, tuple)) or not identities:
                raise IdgenError("`identities` must be a non-empty list of dicts (one per person).")
            out = []
            for i, spec in enumerate(identities):
                what = f"identities[{i}]"
                if not isinstance(spec, Mapping):
                    raise IdgenError(f"{what} must be a dict with keys among {IDENTITY_KEYS}.")
                unknown = sorted(set(spec) - set(IDENTITY_KEYS))
                if unknown:
                    raise IdgenError(f"{what} has unknown keys {unknown}; allowed: {IDENTITY_KEYS}.")
                person = self._one_identity(spec.get("face_embeds"), spec.get("face_image"), dim, reference_mode, what)
                if spec.get("kps") is not None:
                    kps = np.asarray(spec["kps"], dtype=np.float32)
                    if kps.shape != (5, 2) or not np.isfinite(kps).all():
                        raise IdgenError(f"{what}['kps'] must be 5 finite (x, y) points [5, 2], got shape {kps.shape}.")
                    person.kps, person.kps_size = kps, None
                if spec.get("mask") is not None:
                    person.mask = _mask_to_tensor(spec["mask"], f"{what}['mask']")
                elif len(identities) > 1:
                    raise IdgenError(f"{what} needs a 'mask': with several people each identity needs its region.")
                person.scale = spec.get("scale")
                out.append(person)
            return out
        return [self._one_identity(face_embeds, face_image, dim, reference_mode, "face_embeds/face_image")]

    def _one_identity(self, face_embeds, face_image, dim, reference_mode, what) -> Identity:
        if (face_embeds is None) == (face_image is None):
            raise IdgenError(f"{what}: give exactly one of `face_embeds` and `face_image`.")
        if face_image is not None:
            analyzer = self._analyzer()
            if getattr(analyzer, "embedding_dim", dim) != dim:
                raise IdgenError(
                    f"{what}: InstantID needs {dim}-d raw ArcFace embeddings, but the face analyzer "
                    f"{getattr(analyzer, 'name', '?')!r} gives {analyzer.embedding_dim}-d; configure an "
                    "insightface pack (antelopev2) for the official embedding."
                )
            photos = face_image if isinstance(face_image, (list, tuple)) else [face_image]
            face_embeds = [self._analyze(p, f"{what} (face_image)") for p in photos]
        try:
            embeds = resolve_face_embeds(face_embeds, None, analyzer=None, dim=dim, normalize=False, reference_mode=reference_mode)
        except IdgenError as e:
            raise type(e)(f"{what}: {e}") from None
        face = _first_face(face_embeds)
        person = Identity(embeds=embeds)
        if face is not None:
            person.kps, person.kps_size = face.kps, face.image_size
        return person

    def keypoint_image(
        self, people: Sequence[Identity], pose_image, width: Optional[int], height: Optional[int]
    ) -> PIL.Image.Image:
        """The IdentityNet condition: keypoints (from `pose_image`, else from each identity) drawn
        with the official `draw_kps` on a `width x height` canvas, several people combined.

        Without `width`/`height`: the pose photo's size (rounded down to a multiple of the VAE
        factor), else the UNet's default size."""
        if pose_image is not None:
            face = self._analyze(pose_image, "pose_image")
            sources = [(face.kps, face.image_size)]
            f = self.vae_scale_factor
            default = (max(f, face.image_size[0] // f * f), max(f, face.image_size[1] // f * f))
        else:
            sources = []
            for i, p in enumerate(people):
                if p.kps is None:
                    raise IdgenError(
                        f"no keypoints for identity {i}: pass `image` (a keypoint image), `pose_image`, a "
                        "`face_image`/`Face` record, or 'kps' in `identities`."
                    )
                sources.append((p.kps, p.kps_size))
            default = (self.unet.config.sample_size * self.vae_scale_factor,) * 2
        width, height = width or default[0], height or default[1]
        canvas = None
        for kps, size in sources:
            if size is not None and tuple(size) != (width, height):
                kps = resize_kps(kps, size, (width, height))
            drawn = np.asarray(draw_kps((width, height), kps))
            canvas = drawn if canvas is None else np.maximum(canvas, drawn)
        return PIL.Image.fromarray(canvas.astype(np.uint8))

    def check_identity_inputs(
        self, image, pose_image, height, width, ip_adapter_scale, identity_guidance_start, identity_guidance_end,
        negative_noise, reference_mode,
    ) -> None:
        if getattr(self, "identity_adapter", None) is None:
            raise IdgenError("no InstantID adapter is loaded; call `pipe.load_instantid(path)` first.")
        if image is not None and pose_image is not None:
            raise IdgenError("Give either `image` (a keypoint image) or `pose_image` (a photo), not both.")
        for name, value in (("height", height), ("width", width)):
            if value is not None and (not isinstance(value, int) or value <= 0 or value % self.vae_scale_factor):
                raise IdgenError(f"`{name}` must be a positive multiple of {self.vae_scale_factor}, got {value!r}.")
        in_window(0, 1, identity_guidance_start, identity_guidance_end)
        if not isinstance(negative_noise, (int, float)) or not math.isfinite(negative_noise) or negative_noise < 0:
            raise IdgenError(f"`negative_noise` must be a finite number >= 0, got {negative_noise!r}.")
        if reference_mode not in ("mean", "normed_mean", "concat"):
            raise IdgenError(f"`reference_mode` must be 'mean', 'normed_mean' or 'concat', got {reference_mode!r}.")
        if ip_adapter_scale is not None:
            expand_identity_scale(self.unet, self.identity_adapter.layer_names, ip_adapter_scale, what="ip_adapter_scale")

    # -- identity encoding (once per call) --------------------------------------------------------
    def encode_identities(
        self,
        people: Sequence[Identity],
        *,
        num_images: int,
        do_classifier_free_guidance: bool,
        reference_mode: ReferenceMode,
        ip_adapter_scale,
        negative_noise: float,
        generator,
        device,
        dtype,
    ) -> tuple[torch.Tensor, IdentityAttentionInputs]:
        """Identity tokens for the IdentityNet context and the per-layer identity keys/values.

        Per person, as the official `_encode_prompt_image_emb`: the negative embedding (zeros, or
        `negative_noise` x U[0, 1) noise) and the embedding go through the Resampler together; with
        `reference_mode="concat"` each reference gives its own tokens, concatenated. Tokens are
        `[negatives x num_images, positives x num_images]`, the batch layout of the text embeddings.

        Returns:
            `(tokens, inputs)`: tokens `[(2x) num_images, sum of tokens, C]` (all people concatenated)
            and the `IdentityAttentionInputs` for the UNet's identity processors.
        """
        adapter = self.identity_adapter
        layer_names = adapter.layer_names
        configured = {k: p.scale for k, p in self._identity_processors().items()}
        all_tokens, kv, scales = [], {k: [] for k in layer_names}, {k: [] for k in layer_names}
        noise_gen = None
        if negative_noise > 0:
            g = generator[0] if isinstance(generator, list) else generator
            noise_gen = torch.Generator("cpu").manual_seed(g.initial_seed() if g is not None else 0)
        for i, person in enumerate(people):
            embeds = person.embeds  # [N, D], CPU float32
            x = embeds[:, None, :] if reference_mode == "concat" else embeds[None]  # [R, n, D]
            if do_classifier_free_guidance:
                if noise_gen is not None:
                    negative = negative_noise * torch.rand(x.shape, generator=noise_gen, dtype=x.dtype)
                else:
                    negative = torch.zeros_like(x)
                x = torch.cat([negative, x], dim=0)
            groups = 2 if do_classifier_free_guidance else 1
            tokens, layer_kv = adapter(x.to(device=device), return_kv=True)
            # [groups * R, Q, C] -> [groups, R * Q, C] (R references concatenated along the tokens)
            tokens = tokens.reshape(groups, -1, tokens.shape[-1])
            all_tokens.append(tokens)
            for k, (key, value) in layer_kv.items():
                kv[k].append(
                    (
                        key.reshape(groups, -1, key.shape[-1]).repeat_interleave(num_images, dim=0).to(dtype),
                        value.reshape(groups, -1, value.shape[-1]).repeat_interleave(num_images, dim=0).to(dtype),
                    )
                )
            scale = person.scale if person.scale is not None else ip_adapter_scale
            what = f"identities[{i}]['scale']" if person.scale is not None else "ip_adapter_scale"
            per_layer = configured if scale is None else expand_identity_scale(self.unet, layer_names, scale, what=what)
            for k in layer_names:
                scales[k].append(per_layer[k])
        tokens = torch.cat(all_tokens, dim=1).repeat_interleave(num_images, dim=0).to(dtype)
        inputs = IdentityAttentionInputs(kv=kv, scales=scales, masks=[p.mask for p in people])
        return tokens, inputs


class InstantIDPipeline(InstantIDPipelineMixin, StableDiffusionXLControlNetPipeline):
    r"""InstantID text-to-image with Stable Diffusion XL.

    Args:
        vae ([`AutoencoderKL`]): decodes latents to images.
        text_encoder ([`CLIPTextModel`]), text_encoder_2 ([`CLIPTextModelWithProjection`]): SDXL's two
            text encoders; tokenizer, tokenizer_2 ([`CLIPTokenizer`]) their tokenizers.
        unet ([`UNet2DConditionModel`]): the SDXL UNet; its cross-attentions get
            `InstantIDAttnProcessor`s when an adapter is loaded.
        controlnet ([`ControlNetModel`]): the IdentityNet (official `ControlNetModel` folder). Its
            cross-attention context is the identity tokens, not the text.
        scheduler ([`SchedulerMixin`]): any diffusers scheduler.
        identity_adapter ([`InstantIDAdapter`], optional): Resampler + identity key/value
            projections (`load_instantid` sets it; a saved pipeline restores it).
        identity_scale (`float` or block `dict`, defaults to 0.8): the default identity scale.
        force_zeros_for_empty_prompt, add_watermarker, feature_extractor, image_encoder: as in
            [`StableDiffusionXLControlNetPipeline`].
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->image_encoder->identity_adapter->unet->vae"
    _optional_components = StableDiffusionXLControlNetPipeline._optional_components + ["identity_adapter"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        text_encoder_2: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        tokenizer_2: CLIPTokenizer,
        unet: UNet2DConditionModel,
        controlnet: ControlNetModel,
        scheduler: KarrasDiffusionSchedulers,
        identity_adapter: Optional[InstantIDAdapter] = None,
        force_zeros_for_empty_prompt: bool = True,
        add_watermarker: Optional[bool] = None,
        feature_extractor=None,
        image_encoder=None,
        identity_scale: Union[float, dict] = DEFAULT_IDENTITY_SCALE,
    ):
        if not isinstance(controlnet, ControlNetModel):
            raise IdgenError(
                f"InstantIDPipeline takes one IdentityNet ControlNetModel, got {type(controlnet).__name__}."
            )
        super().__init__(
            vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
            tokenizer_2=tokenizer_2, unet=unet, controlnet=controlnet, scheduler=scheduler,
            force_zeros_for_empty_prompt=force_zeros_for_empty_prompt, add_watermarker=add_watermarker,
            feature_extractor=feature_extractor, image_encoder=image_encoder,
        )
        self.register_modules(identity_adapter=identity_adapter)
        self.register_to_config(identity_scale=identity_scale)
        self._restore_identity_branch(identity_scale)

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: Union[str, list[str]] = None,
        prompt_2: Optional[Union[str, list[str]]] = None,
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
        denoising_end: Optional[float] = None,
        guidance_scale: float = 5.0,
        negative_prompt: Optional[Union[str, list[str]]] = None,
        negative_prompt_2: Optional[Union[str, list[str]]] = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: Optional[Union[torch.Generator, list[torch.Generator]]] = None,
        latents: Optional[torch.Tensor] = None,
        prompt_embeds: Optional[torch.Tensor] = None,
        negative_prompt_embeds: Optional[torch.Tensor] = None,
        pooled_prompt_embeds: Optional[torch.Tensor] = None,
        negative_pooled_prompt_embeds: Optional[torch.Tensor] = None,
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
        original_size: Optional[tuple[int, int]] = None,
        crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: Optional[tuple[int, int]] = None,
        negative_original_size: Optional[tuple[int, int]] = None,
        negative_crops_coords_top_left: tuple[int, int] = (0, 0),
        negative_target_size: Optional[tuple[int, int]] = None,
        clip_skip: Optional[int] = None,
        callback_on_step_end: Optional[Callable] = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
    ):
        r"""Generate images of the person (or people) given by the identity inputs.

        Args:
            prompt, prompt_2, negative_prompt, negative_prompt_2, prompt_embeds, negative_prompt_embeds,
            pooled_prompt_embeds, negative_pooled_prompt_embeds, clip_skip: the text, as in
                [`StableDiffusionXLControlNetPipeline`]; encoded once per call.
            image: the IdentityNet condition (a keypoint image, e.g. `idgen.conditioning.draw_kps`).
                If omitted, the keypoints of `pose_image`, else of the face photo / `Face` records /
                `identities[i]["kps"]` are drawn at the output size.
            face_embeds: raw (un-normalised) ArcFace embeddings `[512]` or `[N, 512]` (N reference
                photos of one person), or `Face` records, or a list of them.
            face_image: a photo (or list of photos) of the person instead of `face_embeds`; faces are
                found with `pipe.face_analyzer` (default `idgen.face.get_face_analyzer()`).
            pose_image: a photo whose (largest) face gives the keypoints, rescaled to the output size.
            identities: several people in one image: `[{"face_embeds" | "face_image": ..., "mask": ...,
                "kps": ..., "scale": ...}, ...]`. `mask` ([H, W] in [0, 1], any resolution with the
                output's aspect ratio; required with 2+ people) limits the identity branch to a region;
                `kps` ([5, 2], output pixels) places the face in the combined keypoint image; `scale`
                (float or block dict) overrides `ip_adapter_scale` for that person. The IdentityNet
                sees all people's tokens, concatenated.
            reference_mode: how N reference embeddings of one person combine: "mean", "normed_mean"
                (mean rescaled to the mean norm) or "concat" (16 tokens per reference).
            height, width: output size (multiples of 8); default: the size of `image` / `pose_image`,
                else the UNet's default.
            num_inference_steps (defaults to 30), timesteps, sigmas, denoising_end, guidance_scale
                (defaults to 5.0), eta, generator, latents, guess_mode, original_size,
                crops_coords_top_left, target_size, negative_*_size: as in diffusers' SDXL pipelines.
            ip_adapter_scale: identity scale for this call, float or block dict (`{"down": {"block_2":
                [0.0, 1.0]}, "up": ...}`); None uses `set_ip_adapter_scale` (0.8 after loading).
            controlnet_conditioning_scale: IdentityNet scale (defaults to 0.8).
            identity_guidance_start, identity_guidance_end: fraction of the steps during which the
                identity attention is applied (same convention as `control_guidance_start/end`).
            control_guidance_start, control_guidance_end: the same for the IdentityNet.
            negative_noise: 0 (official) uses zero embeddings for the unconditional branch; > 0 uses
                `negative_noise` x U[0, 1) noise instead (deterministic given the generator's seed).
            output_type: "pil", "np", "pt" or "latent"; return_dict: output dataclass or tuple.
            cross_attention_kwargs: passed to the UNet's attention processors (e.g. `{"scale": 0.7}`
                for LoRA).
            callback_on_step_end, callback_on_step_end_tensor_inputs: per-step callback, as in diffusers.

        Examples:

        Returns:
            [`StableDiffusionXLPipelineOutput`] or `tuple`: the generated images.
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
            prompt, prompt_2, image, None, negative_prompt, negative_prompt_2, prompt_embeds,
            negative_prompt_embeds, pooled_prompt_embeds, None, None, negative_pooled_prompt_embeds,
            controlnet_conditioning_scale, control_guidance_start, control_guidance_end,
            callback_on_step_end_tensor_inputs,
        )
        self._guidance_scale = guidance_scale
        self._clip_skip = clip_skip
        self._cross_attention_kwargs = cross_attention_kwargs
        self._denoising_end = denoising_end
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
        prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds = self.encode_prompt(
            prompt, prompt_2, device, num_images_per_prompt, self.do_classifier_free_guidance, negative_prompt,
            negative_prompt_2, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds, negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            lora_scale=lora_scale, clip_skip=self.clip_skip,
        )
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

        # 7. Per-step switches as Python values (no device sync in the loop), added time ids
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        n = len(timesteps)
        controlnet_keep = [float(in_window(i, n, control_guidance_start, control_guidance_end)) for i in range(n)]
        identity_on = [in_window(i, n, identity_guidance_start, identity_guidance_end) for i in range(n)]
        base_kwargs = dict(cross_attention_kwargs or {})
        kwargs_with_identity = {**base_kwargs, "ip_hidden_states": identity_inputs}

        original_size = original_size or image.shape[-2:]
        target_size = target_size or (height, width)
        add_text_embeds = pooled_prompt_embeds
        if self.text_encoder_2 is None:
            text_encoder_projection_dim = int(pooled_prompt_embeds.shape[-1])
        else:
            text_encoder_projection_dim = self.text_encoder_2.config.projection_dim
        add_time_ids = self._get_add_time_ids(
            original_size, crops_coords_top_left, target_size, dtype=prompt_embeds.dtype,
            text_encoder_projection_dim=text_encoder_projection_dim,
        )
        if negative_original_size is not None and negative_target_size is not None:
            negative_add_time_ids = self._get_add_time_ids(
                negative_original_size, negative_crops_coords_top_left, negative_target_size,
                dtype=prompt_embeds.dtype, text_encoder_projection_dim=text_encoder_projection_dim,
            )
        else:
            negative_add_time_ids = add_time_ids
        if self.do_classifier_free_guidance:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds], dim=0)
            add_text_embeds = torch.cat([negative_pooled_prompt_embeds, add_text_embeds], dim=0)
            add_time_ids = torch.cat([negative_add_time_ids, add_time_ids], dim=0)
        prompt_embeds = prompt_embeds.to(device)
        add_text_embeds = add_text_embeds.to(device)
        add_time_ids = add_time_ids.to(device).repeat(num_images, 1)
        identity_tokens = identity_tokens.to(device)

        # 8. Denoising loop
        if denoising_end is not None and isinstance(denoising_end, float) and 0 < denoising_end < 1:
            cutoff = int(round(self.scheduler.config.num_train_timesteps * (1 - denoising_end)))
            num_inference_steps = len(list(filter(lambda ts: ts >= cutoff, timesteps)))
            timesteps = timesteps[:num_inference_steps]
        num_warmup_steps = len(timesteps) - num_inference_steps * self.scheduler.order
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                latent_model_input = torch.cat([latents] * 2) if self.do_classifier_free_guidance else latents
                latent_model_input = self.scheduler.scale_model_input(latent_model_input, t)
                added_cond_kwargs = {"text_embeds": add_text_embeds, "time_ids": add_time_ids}

                # IdentityNet: keypoint image + identity tokens as its cross-attention context
                if guess_mode and self.do_classifier_free_guidance:
                    control_model_input = self.scheduler.scale_model_input(latents, t)
                    controlnet_context = identity_tokens.chunk(2)[1]
                    controlnet_added_cond_kwargs = {
                        "text_embeds": add_text_embeds.chunk(2)[1],
                        "time_ids": add_time_ids.chunk(2)[1],
                    }
                else:
                    control_model_input = latent_model_input
                    controlnet_context = identity_tokens
                    controlnet_added_cond_kwargs = added_cond_kwargs
                down_block_res_samples, mid_block_res_sample = self.controlnet(
                    control_model_input, t, encoder_hidden_states=controlnet_context, controlnet_cond=image,
                    conditioning_scale=controlnet_conditioning_scale * controlnet_keep[i], guess_mode=guess_mode,
                    added_cond_kwargs=controlnet_added_cond_kwargs, return_dict=False,
                )
                if guess_mode and self.do_classifier_free_guidance:
                    down_block_res_samples = [torch.cat([torch.zeros_like(d), d]) for d in down_block_res_samples]
                    mid_block_res_sample = torch.cat([torch.zeros_like(mid_block_res_sample), mid_block_res_sample])

                # UNet: text cross-attention + identity attention (precomputed keys/values)
                noise_pred = self.unet(
                    latent_model_input, t, encoder_hidden_states=prompt_embeds, timestep_cond=timestep_cond,
                    cross_attention_kwargs=kwargs_with_identity if identity_on[i] else base_kwargs or None,
                    down_block_additional_residuals=down_block_res_samples,
                    mid_block_additional_residual=mid_block_res_sample,
                    added_cond_kwargs=added_cond_kwargs, return_dict=False,
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
                    add_text_embeds = callback_outputs.pop("add_text_embeds", add_text_embeds)
                    negative_pooled_prompt_embeds = callback_outputs.pop(
                        "negative_pooled_prompt_embeds", negative_pooled_prompt_embeds
                    )
                    add_time_ids = callback_outputs.pop("add_time_ids", add_time_ids)
                    negative_add_time_ids = callback_outputs.pop("negative_add_time_ids", negative_add_time_ids)
                    image = callback_outputs.pop("image", image)

                if i == len(timesteps) - 1 or ((i + 1) > num_warmup_steps and (i + 1) % self.scheduler.order == 0):
                    progress_bar.update()

        # 9. Decode
        if output_type != "latent":
            needs_upcasting = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
            if needs_upcasting:
                self.vae.to(dtype=torch.float32)
                latents = latents.to(next(iter(self.vae.post_quant_conv.parameters())).dtype)
            has_mean = getattr(self.vae.config, "latents_mean", None) is not None
            has_std = getattr(self.vae.config, "latents_std", None) is not None
            if has_mean and has_std:
                mean = torch.tensor(self.vae.config.latents_mean).view(1, 4, 1, 1).to(latents.device, latents.dtype)
                std = torch.tensor(self.vae.config.latents_std).view(1, 4, 1, 1).to(latents.device, latents.dtype)
                latents = latents * std / self.vae.config.scaling_factor + mean
            else:
                latents = latents / self.vae.config.scaling_factor
            image = self.vae.decode(latents, return_dict=False)[0]
            if needs_upcasting:
                self.vae.to(dtype=torch.float16)
            if self.watermark is not None:
                image = self.watermark.apply_watermark(image)
            image = self.image_processor.postprocess(image, output_type=output_type)
        else:
            image = latents

        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return StableDiffusionXLPipelineOutput(images=image)
