"""What every InstantID pipeline adds to its diffusers ControlNet pipeline, written once.

The pipelines run diffusers' own `__call__` (its denoising loop, schedulers, guess mode, callbacks,
`denoising_end`, inpainting rules). InstantID's two identity paths go in through hooks that live for
one call only (`InstantIDPipelineMixin.identity_branch`):
- the UNet's cross-attentions get `InstantIDAttnProcessor`s (installed for the call, the previous
  processors restored afterwards) and, through a forward pre-hook on the UNet, the identity
  keys/values as `cross_attention_kwargs["ip_hidden_states"]` during the identity window;
- the IdentityNet's cross-attention context is the identity tokens, not the text: diffusers' loop
  passes the prompt embeddings to the ControlNet, and a forward pre-hook swaps them for the tokens.
Both hooks are hand-written because diffusers has no argument for a separate ControlNet context
or a per-step attention input; they are removed in a `finally`.

Extra ControlNets (depth, canny, pose...) follow the official `pipeline_stable_diffusion_xl_instantid_full.py`:
`controlnet` is a list / `MultiControlNetModel` whose first entry is the IdentityNet; diffusers'
multi-ControlNet loop runs them all, the pre-hook sits on the first only, so the others keep the
text as their context. The official `control_mask` ("enhance face region") multiplies the
IdentityNet's residuals by the mask (a forward hook) and limits the identity attention to it.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.models import AutoencoderKL, ControlNetModel, MultiControlNetModel, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from idgen.acceleration.mixin import AccelerationMixin
from idgen.adapters.instantid.attention import IdentityAttentionInputs
from idgen.adapters.instantid.loader import (
    DEFAULT_IDENTITY_SCALE,
    InstantIDLoaderMixin,
    ScaleConfig,
    expand_identity_scale,
    identity_processors_installed,
)
from idgen.adapters.instantid.model import InstantIDAdapter
from idgen.adapters.style.loader import get_style_adapter
from idgen.conditioning import draw_kps, draw_kps_many, fit_kps, output_size_for
from idgen.deprecation import take_renamed
from idgen.errors import FaceNotFoundError, IdgenError
from idgen.face import Face, get_face_analyzer
from idgen.identity import ReferenceMode, in_window, resolve_face_embeds
from idgen.image_io import load_image
from idgen.validation import check_sampling_arguments

#: Keys an entry of `identities=[...]` may have.
IDENTITY_KEYS = ("face_embeds", "face_image", "mask", "kps", "scale")
#: Defaults of `identity_start` / `identity_end` (module constants: `take_renamed` compares by identity).
IDENTITY_START = 0.0
IDENTITY_END = 1.0
#: `__call__` arguments that were renamed: old name -> (new name, default of the new one).
RENAMED = {
    "ip_adapter_scale": ("identity_scale", None),
    "identity_guidance_start": ("identity_start", IDENTITY_START),
    "identity_guidance_end": ("identity_end", IDENTITY_END),
}


@dataclass
class Identity:
    """One person of a call, resolved: embeddings `[N, D]` (CPU float32) plus where and how much."""

    embeds: torch.Tensor
    kps: Optional[np.ndarray] = None  # [5, 2] pixels in `kps_size` (w, h); None = output pixels
    kps_size: Optional[tuple[int, int]] = None
    mask: Optional[torch.Tensor] = None  # [1, 1, H, W] float in [0, 1]
    scale: Optional[ScaleConfig] = None  # None: the call's / configured scale




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


def load_photos(image) -> tuple[list[np.ndarray], bool]:
    """The photo(s) of `image` (one, or a list of B photos of one size) as `[H, W, 3]` uint8
    arrays, and whether `image` was a list."""
    batched = isinstance(image, list)
    return [load_image(photo) for photo in (image if batched else [image])], batched


def kps_per_photo(target_kps, count: int, batched: bool) -> list:
    """`target_kps` (`[5, 2]`, or `[B, 5, 2]` for B photos; None: detect) as one entry per photo."""
    if target_kps is None:
        return [None] * count
    return list(np.asarray(target_kps, np.float32)) if batched else [target_kps]


def draw_target_kps(photo: np.ndarray, target_kps) -> PIL.Image.Image:
    """The keypoint image of `target_kps` (`[5, 2]` pixels of `photo`, `[H, W, 3]`) at the photo's size."""
    kps = np.asarray(target_kps, dtype=np.float32)
    if kps.shape != (5, 2) or not np.isfinite(kps).all():
        raise IdgenError(f"target_kps must be 5 finite (x, y) points [5, 2], got shape {kps.shape}.")
    return draw_kps((photo.shape[1], photo.shape[0]), kps)


ControlNetInput = Union[ControlNetModel, Sequence[ControlNetModel], MultiControlNetModel, None]
#: ControlNet config entries that must equal the UNet's for the residuals to fit it.
_MUST_FIT_UNET = ("cross_attention_dim", "block_out_channels", "layers_per_block")


def controlnet_entries(controlnet: ControlNetInput) -> list:
    """The ControlNets of `controlnet` in order (the IdentityNet first): [] for None, the nets of a
    list / `MultiControlNetModel`, else `[controlnet]`."""
    if controlnet is None:
        return []
    if isinstance(controlnet, MultiControlNetModel):
        return list(controlnet.nets)
    if isinstance(controlnet, (list, tuple)):
        return list(controlnet)
    return [controlnet]


def check_controlnets(controlnet: ControlNetInput, unet: Optional[UNet2DConditionModel], pipeline_name: str) -> None:
    """`controlnet` is None (a pipeline built without it, e.g. to use its text encoders only, as
    diffusers allows; calling it then raises), the IdentityNet `ControlNetModel`, or a list /
    `MultiControlNetModel` of ControlNetModels with the IdentityNet first. Each must fit `unet`
    (cross-attention width, block widths and depth; latent in-channels = the UNet's out-channels).

    Raises:
        IdgenError: naming the entry (`controlnet[i]`) and the config value that does not fit.
    """
    nets = controlnet_entries(controlnet)
    several = not isinstance(controlnet, ControlNetModel)
    if controlnet is not None and not nets:
        raise IdgenError(f"{pipeline_name}: `controlnet` is an empty list; the IdentityNet comes first.")
    for i, net in enumerate(nets):
        role = "the IdentityNet" if i == 0 else "an extra ControlNet"
        what = f"controlnet[{i}] ({role})" if several else "controlnet (the IdentityNet)"
        if not isinstance(net, ControlNetModel):
            raise IdgenError(f"{pipeline_name}: {what} must be a diffusers ControlNetModel, got {type(net).__name__}.")
        if unet is None:
            continue
        wanted = {name: unet.config.get(name) for name in _MUST_FIT_UNET}
        wanted["in_channels"] = unet.config.out_channels  # latent channels (an inpainting UNet takes 9 in)
        for name, want in wanted.items():
            got = net.config.get(name)
            if isinstance(want, (list, tuple)):
                got, want = tuple(got) if isinstance(got, (list, tuple)) else got, tuple(want)
            if got != want:
                raise IdgenError(
                    f"{pipeline_name}: {what} has {name}={got!r} but the UNet needs {want!r}; it is a ControlNet "
                    "for another base model (SD1.5: cross-attention 768, SDXL: 2048)."
                )


class StableDiffusionXLInstantIDComponents:
    """`__init__` of the SDXL InstantID pipelines (text-to-image, img2img, inpainting), placed before the
    diffusers ControlNet pipeline in their bases: diffusers' components and options, then the
    IdentityNet and InstantID's. `requires_aesthetics_score` (diffusers' inpainting option) must
    stay False: only the SDXL refiner uses it, and InstantID is made for the base UNet."""

    _optional_components = [
        "tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2", "feature_extractor", "image_encoder",
        "controlnet", "identity_adapter",
    ]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        text_encoder_2: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        tokenizer_2: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        requires_aesthetics_score: bool = False,
        force_zeros_for_empty_prompt: bool = True,
        add_watermarker: Optional[bool] = None,
        feature_extractor=None,
        image_encoder=None,
        controlnet: ControlNetInput = None,
        identity_adapter: Optional[InstantIDAdapter] = None,
        identity_scale: Union[float, dict] = DEFAULT_IDENTITY_SCALE,
    ):
        check_controlnets(controlnet, unet, type(self).__name__)
        if requires_aesthetics_score:
            raise IdgenError(
                "requires_aesthetics_score=True is for the SDXL refiner; InstantID's adapter and IdentityNet "
                "are made for the SDXL base UNet."
            )
        super().__init__(  # diffusers' inpainting pipeline registers requires_aesthetics_score=False itself
            vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
            tokenizer_2=tokenizer_2, unet=unet, controlnet=controlnet, scheduler=scheduler,
            force_zeros_for_empty_prompt=force_zeros_for_empty_prompt, add_watermarker=add_watermarker,
            feature_extractor=feature_extractor, image_encoder=image_encoder,
        )
        self.register_modules(identity_adapter=identity_adapter)
        self.register_to_config(identity_scale=identity_scale)


class StableDiffusionInstantIDComponents:
    """`__init__` of the SD1.5-architecture InstantID pipelines (text-to-image and inpainting), in
    the order of the SDXL ones. `requires_safety_checker` defaults to False, so the default
    `safety_checker=None` does not warn."""

    _optional_components = ["safety_checker", "feature_extractor", "image_encoder", "controlnet", "identity_adapter"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker: bool = False,
        controlnet: ControlNetInput = None,
        identity_adapter: Optional[InstantIDAdapter] = None,
        identity_scale: Union[float, dict] = DEFAULT_IDENTITY_SCALE,
    ):
        check_controlnets(controlnet, unet, type(self).__name__)
        super().__init__(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, controlnet=controlnet,
            scheduler=scheduler, safety_checker=safety_checker, feature_extractor=feature_extractor,
            image_encoder=image_encoder, requires_safety_checker=requires_safety_checker,
        )
        self.register_modules(identity_adapter=identity_adapter)
        self.register_to_config(identity_scale=identity_scale)


class InstantIDPipelineMixin(AccelerationMixin, InstantIDLoaderMixin):
    """Call-time identity logic shared by every InstantID pipeline (text-to-image and inpainting,
    SDXL and SD1.5). A pipeline's `__call__` hands all its arguments to `_generate`."""

    face_analyzer = None  # an idgen.face.FaceAnalyzer for `face_image=`/`pose_image=`; None = default
    #: The `__call__` arguments that are InstantID's, not diffusers'.
    identity_arguments = (
        "face_embeds", "face_image", "identities", "reference_mode", "identity_scale", "identity_start",
        "identity_end", "negative_noise",
    )

    def _analyzer(self):
        if self.face_analyzer is None:
            self.face_analyzer = get_face_analyzer()
        return self.face_analyzer

    def _analyze(self, photo, what: str) -> Face:
        try:
            return self._analyzer().get(photo, select="largest")
        except IdgenError as e:
            raise type(e)(f"{what}: {e}") from None

    # -- the ControlNets ----------------------------------------------------------------------
    @property
    def identitynet(self) -> Optional[ControlNetModel]:
        """The IdentityNet: `controlnet`, or its first entry when there are extra ControlNets."""
        nets = controlnet_entries(self.controlnet)
        return nets[0] if nets else None

    @property
    def extra_controlnets(self) -> list:
        """The ControlNets after the IdentityNet (empty with the IdentityNet alone)."""
        return controlnet_entries(self.controlnet)[1:]

    def add_controlnets(self, controlnets: Union[ControlNetModel, Sequence[ControlNetModel]]) -> None:
        """Append ControlNets (depth, canny, pose...) after the IdentityNet and any extra ones:
        `controlnet` becomes a `MultiControlNetModel` (saved by `save_pretrained` as `controlnet/`,
        `controlnet_1/`, ...). They are moved to the IdentityNet's device and dtype; each call
        then takes one condition image per ControlNet (see `__call__`). Call before
        `enable_model_cpu_offload`, which does not see ControlNets added later."""
        new = list(controlnets) if isinstance(controlnets, (list, tuple)) else [controlnets]
        identitynet = self.identitynet
        if identitynet is None:
            raise IdgenError(f"{type(self).__name__} has no IdentityNet to add ControlNets to (controlnet=None).")
        nets = [identitynet, *self.extra_controlnets, *new]
        check_controlnets(nets, self.unet, type(self).__name__)
        nets[-len(new):] = [net.to(device=identitynet.device, dtype=identitynet.dtype) for net in new]
        self.register_modules(controlnet=MultiControlNetModel(nets))

    def remove_controlnets(self) -> None:
        """Drop the extra ControlNets: `controlnet` is the IdentityNet alone again."""
        self.register_modules(controlnet=self.identitynet)

    def split_conditions(self, conditions, name: str) -> tuple[Any, list]:
        """`(IdentityNet condition, [condition of each extra ControlNet])` from the `name` argument:
        with the IdentityNet alone, `conditions` is its condition (None: drawn keypoints); with
        extra ControlNets, a list with one entry per ControlNet, the IdentityNet's first (None:
        drawn) and an image (or `[B, 3, H, W]` tensor) for each extra one."""
        extras = self.extra_controlnets
        if not extras:
            return conditions, []
        count = 1 + len(extras)
        if not isinstance(conditions, (list, tuple)) or len(conditions) != count:
            got = f"{len(conditions)} entries" if isinstance(conditions, (list, tuple)) else repr(type(conditions).__name__)
            raise IdgenError(
                f"`{name}` must be a list of {count} conditions, one per ControlNet (the IdentityNet's keypoint "
                f"image first, None to draw it, then one image per extra ControlNet); got {got}."
            )
        for i, condition in enumerate(conditions):
            if i and condition is None:
                raise IdgenError(f"`{name}[{i}]` is None: the extra ControlNet controlnet[{i}] needs its condition image.")
            if isinstance(condition, (list, tuple)):
                raise IdgenError(f"`{name}[{i}]` is a list: with extra ControlNets each takes one condition image.")
        return conditions[0], list(conditions[1:])

    @staticmethod
    def join_conditions(first, extras: list):
        """The inverse of `split_conditions`: what diffusers' `__call__` takes."""
        return [first, *extras] if extras else first

    def check_controlnet_arguments(self, call: dict) -> None:
        """`controlnet_conditioning_scale` / `control_guidance_start` / `control_guidance_end`: a
        number or one per ControlNet (diffusers' rules; numbers are made floats, as diffusers
        wants). Raises `IdgenError` naming the argument when a list's length is not the number
        of ControlNets. Values are checked by `check_sampling_arguments` / `in_window`."""
        count = len(controlnet_entries(self.controlnet))
        for name in ("controlnet_conditioning_scale", "control_guidance_start", "control_guidance_end"):
            value = call[name]
            if isinstance(value, (list, tuple)):
                if len(value) != count:
                    raise IdgenError(
                        f"`{name}` has {len(value)} values but the pipeline has {count} ControlNet(s) (the "
                        "IdentityNet first); give one number or one per ControlNet."
                    )
                call[name] = [float(v) if isinstance(v, (int, float)) else v for v in value]
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                call[name] = float(value)
        starts, ends = call["control_guidance_start"], call["control_guidance_end"]
        starts = starts if isinstance(starts, list) else [starts] * count
        ends = ends if isinstance(ends, list) else [ends] * count
        for i, (start, end) in enumerate(zip(starts, ends)):
            if not isinstance(start, float) or not isinstance(end, float) or not 0.0 <= start < end <= 1.0:
                raise IdgenError(
                    f"control_guidance_start/end of ControlNet {i} must satisfy 0 <= start < end <= 1; got {start!r}, {end!r}."
                )

    def output_size(self, photo_size: Optional[tuple[int, int]], width: Optional[int], height: Optional[int]) -> tuple[int, int]:
        """`(width, height)` of the output: as given; the missing ones from the photo of `photo_size`
        `(w, h)` with its aspect ratio (both missing: the official demo's `output_size_for` rule,
        1024 / 1280 / 64 at SDXL's native 1024, scaled to this UNet's native size); without a photo
        the UNet's native size."""
        native = self.unet.config.sample_size * self.vae_scale_factor
        if photo_size is None or (width is not None and height is not None):
            return width or native, height or native
        f = self.vae_scale_factor
        base = max(f, native // 16 // f * f)
        if width is None and height is None:
            return output_size_for(photo_size, min_side=native, max_side=native * 5 // 4, base=base)
        if width is None:
            return max(base, round(height * photo_size[0] / photo_size[1] / base) * base), height
        return width, max(base, round(width * photo_size[1] / photo_size[0] / base) * base)

    def output_size_of(self, condition, width: Optional[int], height: Optional[int]) -> tuple[int, int]:
        """`(width, height)`: as given, the missing ones from the IdentityNet condition's size
        (diffusers' rule: rounded down to the VAE factor), so that every ControlNet's condition
        is resized to one size."""
        if width is not None and height is not None:
            return width, height
        h, w = self.control_image_processor.get_default_height_width(condition, height, width)
        return w, h

    # -- inputs -----------------------------------------------------------------------------
    def split_arguments(self, arguments: dict, deprecated: dict) -> tuple[dict, dict]:
        """`(identity arguments, diffusers arguments)` of a `__call__`; the old names in `deprecated`
        (the call's `**kwargs`) are taken with a `FutureWarning`, anything else there is an error."""
        identity = {name: arguments.pop(name) for name in self.identity_arguments}
        for old, (new, default) in RENAMED.items():
            identity[new] = take_renamed(deprecated, old, new, identity[new], default)
        if deprecated:
            raise IdgenError(f"{type(self).__name__} got unexpected arguments {sorted(deprecated)}.")
        return identity, arguments

    def check_identity_inputs(
        self, *, height, width, identity_scale, identity_start, identity_end, negative_noise, reference_mode, **resolved
    ) -> None:
        """Raises `IdgenError` naming the first wrong identity argument (or a missing component). The
        `resolved` ones (faces, identities, keypoints) are checked where they are resolved."""
        if getattr(self, "identity_adapter", None) is None:
            raise IdgenError("no InstantID adapter is loaded; call `pipe.load_instantid(path)` first.")
        if self.controlnet is None:
            raise IdgenError(
                f"{type(self).__name__} has no IdentityNet (it was built with controlnet=None); build it with "
                "`controlnet=ControlNetModel.from_pretrained(<InstantID ControlNetModel folder>)`."
            )
        check_controlnets(self.controlnet, self.unet, type(self).__name__)  # `pipe.controlnet = ...` skips __init__
        for name, value in (("height", height), ("width", width)):
            if value is not None and (not isinstance(value, int) or value <= 0 or value % self.vae_scale_factor):
                raise IdgenError(f"`{name}` must be a positive multiple of {self.vae_scale_factor}, got {value!r}.")
        in_window(0, 1, identity_start, identity_end)
        if not isinstance(negative_noise, (int, float)) or not math.isfinite(negative_noise) or negative_noise < 0:
            raise IdgenError(f"`negative_noise` must be a finite number >= 0, got {negative_noise!r}.")
        if reference_mode not in ("mean", "normed_mean", "concat"):
            raise IdgenError(f"`reference_mode` must be 'mean', 'normed_mean' or 'concat', got {reference_mode!r}.")
        if identity_scale is not None:
            expand_identity_scale(self.unet, self.identity_adapter.layer_names, identity_scale, what="identity_scale")

    def resolve_identities(
        self,
        face_embeds=None,
        face_image=None,
        identities: Optional[Sequence[Mapping[str, Any]]] = None,
        reference_mode: ReferenceMode = "mean",
    ) -> list[Identity]:
        """Turn `face_embeds` / `face_image` (one person) or `identities` (one dict per person)
        into `Identity` records. Raises `IdgenError` naming the offending argument."""
        dim = self.identity_adapter.embedding_dim
        if identities is None:
            return [self._one_identity(face_embeds, face_image, dim, reference_mode, "face_embeds/face_image")]
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

    # -- identity encoding (once per call) --------------------------------------------------------
    def encode_identities(
        self,
        people: Sequence[Identity],
        *,
        num_images: int,
        do_classifier_free_guidance: bool,
        reference_mode: ReferenceMode,
        identity_scale: Optional[ScaleConfig],
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
        all_tokens, kv, scales = [], {k: [] for k in layer_names}, {k: [] for k in layer_names}
        noise_gen = None
        if negative_noise > 0:
            g = generator[0] if isinstance(generator, list) else generator
            noise_gen = torch.Generator("cpu").manual_seed(g.initial_seed() if g is not None else 0)
        groups = 2 if do_classifier_free_guidance else 1
        for i, person in enumerate(people):
            embeds = person.embeds  # [N, D], CPU float32
            x = embeds[:, None, :] if reference_mode == "concat" else embeds[None]  # [R, n, D]
            if do_classifier_free_guidance:
                if noise_gen is not None:
                    negative = negative_noise * torch.rand(x.shape, generator=noise_gen, dtype=x.dtype)
                else:
                    negative = torch.zeros_like(x)
                x = torch.cat([negative, x], dim=0)
            tokens, layer_kv = adapter(x.to(device=device), return_kv=True)
            # [groups * R, Q, C] -> [groups, R * Q, C] (R references concatenated along the tokens)
            all_tokens.append(tokens.reshape(groups, -1, tokens.shape[-1]))
            for k, (key, value) in layer_kv.items():
                kv[k].append(
                    (
                        key.reshape(groups, -1, key.shape[-1]).repeat_interleave(num_images, dim=0).to(dtype),
                        value.reshape(groups, -1, value.shape[-1]).repeat_interleave(num_images, dim=0).to(dtype),
                    )
                )
            if person.scale is not None:
                scale, what = person.scale, f"identities[{i}]['scale']"
            elif identity_scale is not None:
                scale, what = identity_scale, "identity_scale"
            else:
                scale, what = self.config.identity_scale, "the configured identity_scale"
            per_layer = expand_identity_scale(self.unet, layer_names, scale, what=what)
            for k in layer_names:
                scales[k].append(per_layer[k])
        tokens = torch.cat(all_tokens, dim=1).repeat_interleave(num_images, dim=0).to(dtype)
        return tokens, IdentityAttentionInputs(kv=kv, scales=scales, masks=[p.mask for p in people])

    # -- the call ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def identity_branch(
        self,
        tokens: torch.Tensor,
        inputs: IdentityAttentionInputs,
        identity_start: float,
        identity_end: float,
        residual_mask: Optional[torch.Tensor] = None,
    ) -> Iterator[None]:
        """For one diffusers `__call__`: the identity processors in the UNet, the identity
        keys/values in its `cross_attention_kwargs` during the steps of `[identity_start,
        identity_end]`, and `tokens` `[B or 2B, T, C]` as the IdentityNet's context (its positive half
        when diffusers runs the ControlNet on the conditional batch only, in guess mode). Extra
        ControlNets keep diffusers' context, the text. With `residual_mask` (`[1, 1, H, W]` in
        [0, 1]) the IdentityNet's residuals are multiplied by it, resized bilinearly to each
        residual (the official `control_mask`)."""
        steps = itertools.count()
        identitynet = self.identitynet

        def unet_identity(module, args, kwargs):
            sample = args[0] if args else kwargs["sample"]
            inputs.latent_size = tuple(sample.shape[-2:])
            # one UNet call per entry of the timesteps, as diffusers' `control_guidance_start/end`
            if not in_window(next(steps), self.num_timesteps, identity_start, identity_end):
                return None
            attention_kwargs = {**(kwargs.get("cross_attention_kwargs") or {}), "ip_hidden_states": inputs}
            return args, {**kwargs, "cross_attention_kwargs": attention_kwargs}

        def identitynet_context(module, args, kwargs):
            text = kwargs["encoder_hidden_states"]
            context = tokens if text.shape[0] == tokens.shape[0] else tokens.chunk(2)[1]
            return args, {**kwargs, "encoder_hidden_states": context.to(device=text.device, dtype=text.dtype)}

        weights: dict = {}

        def weight(residual: torch.Tensor) -> torch.Tensor:
            key = tuple(residual.shape[-2:])
            if key not in weights:
                resized = F.interpolate(residual_mask.to(residual.device), size=key, mode="bilinear")
                weights[key] = resized.to(residual.dtype)
            return weights[key]

        def identitynet_masked(module, args, kwargs, output):
            down, mid = output  # diffusers' loops call ControlNets with return_dict=False
            return [d * weight(d) for d in down], mid * weight(mid)

        with identity_processors_installed(self.unet, self.identity_adapter):
            handles = [
                self.unet.register_forward_pre_hook(unet_identity, with_kwargs=True),
                identitynet.register_forward_pre_hook(identitynet_context, with_kwargs=True),
            ]
            if residual_mask is not None:
                handles.append(identitynet.register_forward_hook(identitynet_masked, with_kwargs=True))
            try:
                yield
            finally:
                for handle in handles:
                    handle.remove()

    def _call_with_identity(self, pipeline_call: Callable, people: Sequence[Identity], identity: dict, call: dict):
        """Encode the identities once, then run diffusers' `pipeline_call(**call)` inside
        `identity_branch`. `identity["control_mask"]` (where the pipeline takes it) also becomes
        the identity region of each person without their own mask."""
        self.check_controlnet_arguments(call)
        check_sampling_arguments({**call, "identity_scale": identity["identity_scale"]})
        control_mask = identity.get("control_mask")
        if control_mask is not None:
            control_mask = _mask_to_tensor(control_mask, "control_mask")
            for person in people:
                person.mask = control_mask if person.mask is None else person.mask
        prompt, prompt_embeds = call["prompt"], call["prompt_embeds"]
        if isinstance(prompt, list):
            batch_size = len(prompt)
        elif prompt is None and prompt_embeds is not None:
            batch_size = prompt_embeds.shape[0]
        else:
            batch_size = 1  # a string prompt (or none at all: diffusers' `check_inputs` says so)
        do_cfg = call["guidance_scale"] > 1 and self.unet.config.time_cond_proj_dim is None
        device, dtype = self._execution_device, self.unet.dtype
        tokens, inputs = self.encode_identities(
            people, num_images=batch_size * call["num_images_per_prompt"], do_classifier_free_guidance=do_cfg,
            reference_mode=identity["reference_mode"], identity_scale=identity["identity_scale"],
            negative_noise=identity["negative_noise"], generator=call["generator"], device=device, dtype=dtype,
        )
        style_off = False
        if (get_style_adapter(self.unet) is not None and call.get("ip_adapter_image") is None
                and call.get("ip_adapter_image_embeds") is None):
            # a style adapter is loaded but this call has no style reference: zero features at scale
            # 0, so the style is skipped exactly (diffusers would refuse the call without image embeds)
            entry, style_off = self.style_call_embeds(None, None, batch_size, do_cfg, device, dtype)
            call["ip_adapter_image_embeds"] = [entry]
        with self.style_off(style_off), self.identity_branch(
            tokens, inputs, identity["identity_start"], identity["identity_end"], control_mask
        ):
            return pipeline_call(**call)


class InstantIDText2ImageMixin(InstantIDPipelineMixin):
    """Text-to-image: the IdentityNet condition is drawn from the identities' (or a pose photo's)
    keypoints, and the output is sized from that photo."""

    identity_arguments = InstantIDPipelineMixin.identity_arguments + ("pose_image", "control_mask")

    def _generate(self, pipeline_call: Callable, arguments: dict, deprecated: dict):
        """The body of `__call__`: `arguments` are all its named arguments, `deprecated` its `**kwargs`."""
        identity, call = self.split_arguments(arguments, deprecated)
        self.check_identity_inputs(height=call["height"], width=call["width"], **identity)
        keypoints, extras = self.split_conditions(call["image"], "image")
        if keypoints is not None and identity["pose_image"] is not None:
            raise IdgenError("Give either a keypoint image (`image`) or `pose_image` (a photo), not both.")
        people = self.resolve_identities(
            identity["face_embeds"], identity["face_image"], identity["identities"], identity["reference_mode"]
        )
        if keypoints is None:
            keypoints, call["width"], call["height"] = self.keypoint_condition(
                people, identity["pose_image"], call["width"], call["height"]
            )
        elif extras:
            call["width"], call["height"] = self.output_size_of(keypoints, call["width"], call["height"])
        call["image"] = self.join_conditions(keypoints, extras)
        return self._call_with_identity(pipeline_call, people, identity, call)

    def keypoint_condition(
        self, people: Sequence[Identity], pose_image, width: Optional[int], height: Optional[int]
    ) -> tuple[PIL.Image.Image, int, int]:
        """The IdentityNet condition and the output size: keypoints (from `pose_image`, else from
        each identity) drawn with the official `draw_kps`, several people combined, at `output_size`.
        Keypoints of a photo are fitted into the output (`fit_kps`: one scale, centred), so a
        portrait face is not stretched onto a square; `identities[i]["kps"]` are output pixels."""
        if pose_image is not None:
            face = self._analyze(pose_image, "pose_image")
            sources = [(face.kps, face.image_size)]
        else:
            sources = []
            for i, p in enumerate(people):
                if p.kps is None:
                    raise IdgenError(
                        f"no keypoints for identity {i}: pass `image` (a keypoint image), `pose_image`, a "
                        "`face_image`/`Face` record, or 'kps' in `identities`."
                    )
                sources.append((p.kps, p.kps_size))
        photo_size = next((tuple(size) for _, size in sources if size is not None), None)
        width, height = self.output_size(photo_size, width, height)
        kps_list = [kps if size is None else fit_kps(kps, size, (width, height)) for kps, size in sources]
        return draw_kps_many((width, height), kps_list), width, height


class InstantIDInpaintMixin(InstantIDPipelineMixin):
    """Identity inpainting: the IdentityNet is fed the keypoints of the face being repainted (of
    each photo, for a list of photos of the one person: `target_kps` `[B, 5, 2]`)."""

    identity_arguments = InstantIDPipelineMixin.identity_arguments + ("target_kps",)

    def _generate(self, pipeline_call: Callable, arguments: dict, deprecated: dict):
        """The body of `__call__`: `arguments` are all its named arguments, `deprecated` its `**kwargs`."""
        identity, call = self.split_arguments(arguments, deprecated)
        self.check_identity_inputs(height=call["height"], width=call["width"], **identity)
        if call["image"] is None or call["mask_image"] is None:
            raise IdgenError("identity inpainting needs `image` (the photo) and `mask_image` (white = repaint).")
        photos, batched = load_photos(call["image"])  # B photos of the one person, a keypoint image each
        call["image"] = [PIL.Image.fromarray(p) for p in photos] if batched else PIL.Image.fromarray(photos[0])
        people = self.resolve_identities(
            identity["face_embeds"], identity["face_image"], identity["identities"], identity["reference_mode"]
        )
        keypoints, extras = self.split_conditions(call["control_image"], "control_image")
        if extras and batched:
            raise IdgenError("a batch of photos (a list `image`) works with the IdentityNet alone; diffusers takes one "
                             "condition image per extra ControlNet. Repaint the photos one call each.")
        if keypoints is None:
            masks = call["mask_image"]
            masks = masks if isinstance(masks, list) else [masks] * len(photos)
            kps = kps_per_photo(identity["target_kps"], len(photos), batched)
            if len(masks) != len(photos) or len(kps) != len(photos):
                raise IdgenError(f"{len(photos)} images need as many masks and `target_kps` ([B, 5, 2]); got "
                                 f"{len(masks)} masks and {len(kps)} keypoint sets.")
            controls = [self.control_image_for(*each) for each in zip(photos, masks, kps)]
            keypoints = controls if batched else controls[0]
        elif identity["target_kps"] is not None:
            raise IdgenError("Give either a keypoint `control_image` or `target_kps`, not both.")
        if extras and (call["width"] is None or call["height"] is None):  # every condition at the photo's size
            call["height"], call["width"] = self.image_processor.get_default_height_width(
                call["image"], call["height"], call["width"])
        call["control_image"] = self.join_conditions(keypoints, extras)
        return self._call_with_identity(pipeline_call, people, identity, call)

    def control_image_for(self, photo: np.ndarray, mask_image, target_kps: Optional[np.ndarray]) -> PIL.Image.Image:
        """The IdentityNet condition at the size of `photo` (`[H, W, 3]` uint8): `target_kps`, else
        the keypoints of the face under `mask_image`."""
        if target_kps is None:
            mask = load_image(mask_image)[..., 0]
            if mask.shape[:2] != photo.shape[:2]:
                raise IdgenError(f"mask_image is {mask.shape[1]}x{mask.shape[0]} but image is "
                                 f"{photo.shape[1]}x{photo.shape[0]}; they must match.")
            target_kps = masked_face_kps(photo, mask, self._analyzer())
        return draw_target_kps(photo, target_kps)
