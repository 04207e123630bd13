"""PuLID (v1, v1.1) for Stable Diffusion XL: ID tokens from an ArcFace embedding and an EVA02-CLIP
view of the face, added in every UNet cross-attention by an (orthogonalised) ID attention.

Same math and checkpoints as the official `pulid/pipeline.py` / `pipeline_v1_1.py`: the official
`pulid_v1.bin` / `pulid_v1.1.safetensors` and `EVA02_CLIP_L_336_psz14_s6B.pt` load unchanged, and
on the same tiny weights the ID tokens, the ID attention and a whole generation (v1; v1.1 with one and
with two ID photos) equal the official code (`tests/test_pulid.py`). The denoising loop is diffusers' own
`StableDiffusionXLPipeline.__call__`; the ID keys/values go to PuLID's processors, installed for the
call only, through `cross_attention_kwargs["ip_hidden_states"]`. With classifier-free guidance the
negative half of the batch gets the tokens of the zero condition, as in the official code.

Official recipe (v1, `app.py`): SDXL base with the SDXL-Lightning 4-step UNet,
`DPMSolverMultistepScheduler(timestep_spacing="trailing")` (`official_scheduler`), 4 steps, CFG 1.2,
ID scale 0.8, mode "fidelity"; these are the defaults here. v1.1 (`app_v1_1.py`) recommends a
regular SDXL model (e.g. Juggernaut-XL-v9) with CFG 7 and 25 steps of DPM++ 2M on Karras sigmas, or
a Lightning community model (DreamShaper-XL-Lightning) with CFG 2 and 5 steps of DPM++ SDE (Karras);
its sampler is a k-diffusion loop. `official_v11_scheduler` (diffusers' DPM-Solver++ 2M on Karras
sigmas) is the same sampler: with the official start latents (`noise * sigma_max / sqrt(1 +
sigma_max^2)`, passed as `latents`; diffusers' default start is `noise`, 0.2 % larger) it gives the
official v1.1 image (`tests/test_pulid.py`). For DPM++ SDE, diffusers' `DPMSolverSDEScheduler` with
`use_karras_sigmas=True` is the counterpart (its Brownian noise is drawn differently).

Several photos of the person (`face_image=[photo, ...]`, or `face_embeds` `[R, 512]` with
`id_image=[crop, ...]`) are combined as the official apps do. v1.1 (`pipeline_v1_1.get_id_embedding`
with a list): the R conditions `[1, R, 1280]` and the EVA hidden states of all R crops (concatenated
along the tokens) go through the IDFormer together, which still makes its 32 tokens; the negative is
the one-photo zero condition; it has no mixing option. v1 (`app.py`): each photo is encoded alone and
the tokens are concatenated: all 10 of the first photo, then of each further one its 5 condition tokens
(`id_mix=False`, the official default) or all 10 (`id_mix=True`, "ID Mix", for blending two people);
the negative is built the same way from the zero condition. Neither averages: the same photo twice is
not the photo once (v1.1: the perceiver attends to a doubled condition; v1: more, repeated tokens).
`face_embeds` `[N, 512]` with a single `id_image` is idgen's own shortcut: the N embeddings averaged.

Face inputs: the ArcFace embedding comes from `face_embeds` or from `face_image` through
`pipe.face_analyzer` (default `idgen.face.get_face_analyzer()`: 512-d ArcFace with an insightface
pack). The EVA-CLIP input is the face aligned to the official 512 crop (FFHQ template, as facexlib's
`FaceRestoreHelper`), in grey, with the background white where `face_mask` says so (the official
code parses the face with facexlib's BiSeNet: labels 0, 7, 8, 9, 14, 15, 16, 18 are background).
Set `pipe.face_parser` (an `idgen.face.parsing.FaceParser` of `79999_iter.pth` / facexlib's
`parsing_bisenet.pth`, the same network) and that mask is made for you; without a parser or a
`face_mask` the whole grey crop is used (hair and background included), which keeps the identity
but gives the ID tokens more of the photo's context.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLPipeline
from diffusers.models import AutoencoderKL, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from idgen.acceleration.mixin import AccelerationMixin
from idgen.adapters.pulid import (
    DEFAULT_IDENTITY_SCALE,
    DEFAULT_MODE,
    EVACLIPVisionModel,
    PuLIDAdapter,
    PuLIDAttentionInputs,
    PuLIDLoaderMixin,
    pulid_processors_installed,
    resolve_mode,
)
from idgen.adapters.pulid.config import ARCFACE_DIM, FACE_CROP_SIZE, PARSING_BACKGROUND_LABELS
from idgen.adapters.pulid.loader import check_identity_scale
from idgen.errors import IdgenError, ModelNotFoundError
from idgen.face import align_face, get_face_analyzer
from idgen.identity import FaceEmbedsInput, face_embeds_to_tensor
from idgen.image_io import load_image
from idgen.validation import check_sampling_arguments


def official_scheduler(config) -> DPMSolverMultistepScheduler:
    """The official v1 scheduler: DPM-Solver++ with trailing timesteps (for SDXL-Lightning)."""
    return DPMSolverMultistepScheduler.from_config(config, timestep_spacing="trailing")


def official_v11_scheduler(config) -> DPMSolverMultistepScheduler:
    """The official v1.1 sampler for regular SDXL models: DPM-Solver++ 2M on Karras sigmas."""
    return DPMSolverMultistepScheduler.from_config(config, use_karras_sigmas=True, timestep_spacing="linspace")


def to_gray(image: torch.Tensor) -> torch.Tensor:
    """`[B, 3, H, W]` RGB -> its luma (0.299, 0.587, 0.114) on 3 channels (official `to_gray`)."""
    x = 0.299 * image[:, 0:1] + 0.587 * image[:, 1:2] + 0.114 * image[:, 2:3]
    return x.repeat(1, 3, 1, 1)


def _mask_tensor(face_mask, size: tuple[int, int]) -> torch.Tensor:
    """`face_mask` (PIL / array / tensor `[H, W]`, > 0.5 or > 127 = face feature) -> bool `[1, 1, H, W]`."""
    if isinstance(face_mask, PIL.Image.Image):
        face_mask = np.asarray(face_mask.convert("L"))
    mask = torch.as_tensor(np.asarray(face_mask) if not isinstance(face_mask, torch.Tensor) else face_mask).squeeze()
    if mask.ndim != 2 or tuple(mask.shape) != size:
        raise IdgenError(f"`face_mask` must be one [H, W] mask of the face crop's size {size}, got {tuple(mask.shape)}.")
    threshold = 127 if mask.dtype == torch.uint8 else 0.5
    return (mask.float() > threshold)[None, None]


class StableDiffusionXLPuLIDPipeline(AccelerationMixin, PuLIDLoaderMixin, StableDiffusionXLPipeline):
    r"""PuLID text-to-image with Stable Diffusion XL.

    Args:
        vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, unet, scheduler,
            force_zeros_for_empty_prompt, add_watermarker, feature_extractor, image_encoder: as in
            [`StableDiffusionXLPipeline`]; during a call the UNet's cross-attentions get
            `PuLIDAttnProcessor`s (its own processors are put back afterwards).
        pulid_adapter ([`PuLIDAdapter`], optional): ID encoder + ID key/value projections.
        eva_clip ([`EVACLIPVisionModel`], optional): the EVA02-CLIP vision tower.
        identity_scale (`float`, defaults to 0.8): the default ID scale (official `id_scale`).
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->eva_clip->pulid_adapter->unet->vae"
    _optional_components = StableDiffusionXLPipeline._optional_components + ["pulid_adapter", "eva_clip"]
    face_analyzer = None  # an idgen.face.FaceAnalyzer for `face_image=`; None = the default one
    face_parser = None  # an idgen.face.parsing.FaceParser: the official white background; None = none

    def __init__(self, vae: AutoencoderKL, text_encoder: CLIPTextModel, text_encoder_2: CLIPTextModelWithProjection,
                 tokenizer: CLIPTokenizer, tokenizer_2: CLIPTokenizer, unet: UNet2DConditionModel,
                 scheduler: KarrasDiffusionSchedulers, image_encoder=None, feature_extractor=None,
                 force_zeros_for_empty_prompt: bool = True, add_watermarker: Optional[bool] = None,
                 pulid_adapter: Optional[PuLIDAdapter] = None, eva_clip: Optional[EVACLIPVisionModel] = None,
                 identity_scale: float = DEFAULT_IDENTITY_SCALE):
        super().__init__(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                         tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, image_encoder=image_encoder,
                         feature_extractor=feature_extractor, force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
                         add_watermarker=add_watermarker)
        self.register_modules(pulid_adapter=pulid_adapter, eva_clip=eva_clip)
        self.register_to_config(identity_scale=identity_scale)

    # -- the ID condition -----------------------------------------------------------------------
    def eva_pixel_values(self, id_image, face_mask=None) -> torch.Tensor:
        """The EVA-CLIP input `[1, 3, S, S]` of an aligned face crop (official preprocessing):
        RGB in [0, 1] -> grey, white where `face_mask` is background -> bicubic (antialiased)
        resize to the tower's size -> OpenAI-CLIP normalisation."""
        crop = torch.from_numpy(load_image(id_image)).permute(2, 0, 1)[None].float() / 255.0
        image = to_gray(crop)
        if face_mask is not None:
            image = torch.where(_mask_tensor(face_mask, tuple(crop.shape[-2:])), image, torch.ones_like(image))
        size = self.eva_clip.image_size
        image = F.interpolate(image, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        mean = torch.tensor(self.eva_clip.config.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.eva_clip.config.image_std).view(1, 3, 1, 1)
        return (image - mean) / std

    @torch.no_grad()
    def encode_identity(self, arcface: torch.Tensor, pixel_values: torch.Tensor,
                        id_mix: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """`(negative, positive)` ID tokens `[1, T, cross_attention_dim]` (official `get_id_embedding`)
        of R reference photos: `arcface` `[R, 512]` (raw) and `pixel_values` `[R, 3, S, S]`.

        Per photo the condition is `[raw ArcFace, L2-normalised EVA embedding]`. v1.1: the conditions
        `[1, R, D]` and the EVA hidden states of all photos, concatenated along the tokens, go through
        the IDFormer at once (official `pipeline_v1_1`). v1: each photo through the encoder alone, the
        tokens concatenated: the first photo's all, each further photo's first `num_token` (official
        `app.py`, `id_mix=False`) or all (`id_mix=True`); `id_mix` does nothing for v1.1. The negative
        is the encoder of the zero condition of one photo (v1: concatenated as the positive)."""
        references = pixel_values.shape[0]
        arcface = arcface.reshape(-1, arcface.shape[-1])
        if arcface.shape[0] != references:
            raise IdgenError(f"{arcface.shape[0]} ArcFace embeddings for {references} face crops: give one per photo.")
        device = self.pulid_adapter.device
        embedding, hidden = self.eva_clip(pixel_values.to(device, self.eva_clip.dtype))
        embedding = embedding / torch.norm(embedding, 2, 1, True)
        condition = torch.cat([arcface.to(device, embedding.dtype), embedding], dim=-1)
        negative = self.pulid_adapter(torch.zeros_like(condition[:1]), [torch.zeros_like(h[:1]) for h in hidden])
        if self.pulid_adapter.version == "v1.1":
            positive = self.pulid_adapter(condition[None], [h.reshape(1, -1, h.shape[-1]) for h in hidden])
            return negative, positive
        tokens = self.pulid_adapter(condition, hidden)
        keep = tokens.shape[1] if id_mix else self.pulid_adapter.id_adapter.num_token
        positive = torch.cat([tokens[0], *(t[:keep] for t in tokens[1:])])[None]
        negative = torch.cat([negative[0], *[negative[0, :keep]] * (references - 1)])[None]
        return negative, positive

    def _references(self, face_image, face_embeds, id_image, face_mask) -> tuple[torch.Tensor, list, list]:
        """`(arcface [R, 512], R crops, R masks or None)` of the reference photos."""
        if (face_image is None) == (face_embeds is None):
            raise IdgenError("Give exactly one of `face_image` (a photo or a list of photos) and `face_embeds` "
                             "(512-d ArcFace embeddings).")
        listed = isinstance(face_image, (list, tuple)) or isinstance(id_image, (list, tuple))
        crops = None if id_image is None else list(id_image) if isinstance(id_image, (list, tuple)) else [id_image]
        if crops is not None and not crops:
            raise IdgenError("`id_image` is an empty list: give one aligned face crop per photo.")
        if face_image is not None:
            photos = list(face_image) if isinstance(face_image, (list, tuple)) else [face_image]
            if not photos:
                raise IdgenError("`face_image` is an empty list: give at least one photo of the person.")
            if crops is not None and len(crops) != len(photos):
                raise IdgenError(f"`id_image` has {len(crops)} crops for the {len(photos)} photos of `face_image`: "
                                 "give one crop per photo, or none.")
            analyzer = self.face_analyzer or get_face_analyzer()
            self.face_analyzer = analyzer
            if getattr(analyzer, "embedding_dim", ARCFACE_DIM) != ARCFACE_DIM:
                raise IdgenError(
                    f"PuLID needs {ARCFACE_DIM}-d raw ArcFace embeddings, but the face analyzer "
                    f"{getattr(analyzer, 'name', '?')!r} gives {analyzer.embedding_dim}-d; configure an insightface "
                    "pack (antelopev2) for the official embedding, or pass `face_embeds` and `id_image`."
                )
            photos = [load_image(photo) for photo in photos]
            faces = [analyzer.get(photo, select="largest") for photo in photos]
            arcface = face_embeds_to_tensor(faces, dim=ARCFACE_DIM, normalize=False)
            if crops is None:
                crops = [align_face(p, f.kps, size=FACE_CROP_SIZE, mode="ffhq").image for p, f in zip(photos, faces)]
        else:
            if crops is None:
                raise IdgenError("with `face_embeds`, give `id_image` (the aligned face crop, or a list of them) for "
                                 "EVA-CLIP, or give `face_image`.")
            arcface = face_embeds_to_tensor(face_embeds, dim=ARCFACE_DIM, normalize=False)
            if not listed:  # one crop: N embeddings averaged (idgen's shortcut; the official code takes one)
                arcface = arcface.mean(0, keepdim=True)
            elif arcface.shape[0] != len(crops):
                raise IdgenError(f"`face_embeds` has {arcface.shape[0]} embeddings and `id_image` {len(crops)} crops: "
                                 "give one embedding per crop (`[R, 512]` with R crops).")
        if not listed:
            masks = [face_mask]
        elif face_mask is None:
            masks = [None] * len(crops)
        elif not isinstance(face_mask, (list, tuple)) or len(face_mask) != len(crops):
            raise IdgenError(f"with {len(crops)} face crops, `face_mask` must be a list of {len(crops)} masks "
                             "(None entries allowed), or None.")
        else:
            masks = list(face_mask)
        return arcface, crops, masks

    def _identity_tokens(self, face_image, face_embeds, id_image, face_mask,
                         id_mix: Optional[bool]) -> tuple[torch.Tensor, torch.Tensor]:
        if id_mix is False and self.pulid_adapter.version == "v1.1":
            raise IdgenError("`id_mix` is a PuLID v1 option (official app.py); v1.1's IDFormer always encodes all "
                             "photos together. Leave `id_mix=None` for v1.1.")
        arcface, crops, masks = self._references(face_image, face_embeds, id_image, face_mask)
        if self.face_parser is not None:
            masks = [self.face_features_mask(c) if m is None else m for c, m in zip(crops, masks)]
        pixel_values = torch.cat([self.eva_pixel_values(c, m) for c, m in zip(crops, masks)])
        return self.encode_identity(arcface, pixel_values, id_mix=bool(id_mix))

    def face_features_mask(self, id_image) -> np.ndarray:
        """`[H, W]` bool of the aligned crop: True on the face features, False where the official code
        whitens (`face_parser`'s labels 0, 7, 8, 9, 14, 15, 16, 18: background, ears, earring, neck,
        necklace, cloth, hat)."""
        labels = self.face_parser.parse(load_image(id_image))
        return ~np.isin(labels, PARSING_BACKGROUND_LABELS)

    def _check_components(self) -> None:
        if getattr(self, "pulid_adapter", None) is None:
            raise IdgenError("no PuLID adapter is loaded; call `pipe.load_pulid(path, eva_clip=...)` first.")
        if getattr(self, "eva_clip", None) is None:
            raise ModelNotFoundError("no EVA-CLIP tower is loaded; pass `eva_clip=` to `load_pulid`.")

    # -- the call ---------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, prompt: Union[str, list[str]] = None, prompt_2: Optional[Union[str, list[str]]] = None,
                 face_image=None, face_embeds: Optional[FaceEmbedsInput] = None, id_image=None, face_mask=None,
                 id_embeds: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                 identity_scale: Optional[float] = None, mode: str = DEFAULT_MODE, num_zero: Optional[int] = None,
                 ortho: Optional[str] = None, id_mix: Optional[bool] = None,
                 negative_prompt: Optional[Union[str, list[str]]] = None,
                 negative_prompt_2: Optional[Union[str, list[str]]] = None,
                 height: Optional[int] = None, width: Optional[int] = None, num_inference_steps: int = 4,
                 guidance_scale: float = 1.2, num_images_per_prompt: int = 1,
                 generator: Optional[Union[torch.Generator, list[torch.Generator]]] = None,
                 cross_attention_kwargs: Optional[dict[str, Any]] = None, **kwargs):
        r"""Generate images of the person given by the face inputs.

        Args:
            prompt, prompt_2, negative_prompt, negative_prompt_2, height, width, num_images_per_prompt,
            generator: as in [`StableDiffusionXLPipeline`]; any other diffusers argument
                (`prompt_embeds`, `latents`, `output_type`, `timesteps`, callbacks...) passes through.
            face_image: a photo of the person, or a list of R photos (the official main + auxiliary ID
                images): each one's largest face gives its ArcFace embedding and (unless `id_image`) its
                aligned 512 crop for EVA-CLIP; the photos are combined as in the module docstring.
            face_embeds: instead, raw (un-normalised) ArcFace embeddings `[512]` / `[R, 512]` or `Face`
                records; needs `id_image`: a list of R crops, one per embedding (R photos), or a single
                crop (then the N embeddings are averaged into one photo's).
            id_image: the aligned face crop (square RGB, e.g. the official 512 crop) for EVA-CLIP, or a
                list of them (one per photo / embedding).
            face_mask: `[H, W]` of the crop, 1 / 255 on the face features, 0 elsewhere (white there);
                with a list of photos / crops, a list of masks (None entries: `face_parser` or none).
            id_embeds: precomputed `(negative, positive)` ID tokens `[1, T, C]` (`encode_identity`),
                instead of the face inputs.
            id_mix: v1 with several photos (official "ID Mix", default off = None / False): False keeps
                of each further photo its 5 condition tokens, True all 10 (to blend two people). v1.1
                has no such option (its IDFormer encodes the photos together): None or True.
            identity_scale: ID scale (official `id_scale`, 0..5); None uses `set_identity_scale` (0.8).
            mode: "fidelity" (default) or, for v1, "extremely style": the official modes' `num_zero`
                zero tokens (v1: 8 / 16, v1.1: 20) and orthogonalisation ("v2" / "v1").
            num_zero, ortho: override the mode ("off", "v1", "v2"), as v1.1's advanced options.
            num_inference_steps (4), guidance_scale (1.2): the official SDXL-Lightning recipe.
            cross_attention_kwargs: passed to the attention processors (e.g. LoRA `{"scale": 0.7}`).

        Returns:
            [`StableDiffusionXLPipelineOutput`] or `tuple`: the generated images.
        """
        self._check_components()
        pulid_mode = resolve_mode(self.pulid_adapter.version, mode, num_zero, ortho)
        scale = check_identity_scale(self.config.identity_scale if identity_scale is None else identity_scale)
        check_sampling_arguments({"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale})
        if id_embeds is None:
            negative, positive = self._identity_tokens(face_image, face_embeds, id_image, face_mask, id_mix)
        elif face_image is not None or face_embeds is not None:
            raise IdgenError("Give either `id_embeds` or the face inputs (`face_image` / `face_embeds`), not both.")
        else:
            negative, positive = id_embeds
        if isinstance(prompt, list):
            batch = len(prompt)
        elif prompt is None and kwargs.get("prompt_embeds") is not None:
            batch = kwargs["prompt_embeds"].shape[0]
        else:
            batch = 1
        n = batch * num_images_per_prompt
        tokens = positive.repeat_interleave(n, dim=0)
        if guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None:  # diffusers' CFG batch order
            tokens = torch.cat([negative.repeat_interleave(n, dim=0), tokens])
        kv = self.pulid_adapter.identity_kv(tokens.to(self.pulid_adapter.dtype), pulid_mode.num_zero)
        inputs = PuLIDAttentionInputs(kv={k: (a.to(self.unet.dtype), b.to(self.unet.dtype)) for k, (a, b) in kv.items()},
                                      scale=scale, ortho=pulid_mode.ortho)
        attention_kwargs = {**(cross_attention_kwargs or {}), "ip_hidden_states": inputs}
        with pulid_processors_installed(self.unet, self.pulid_adapter):
            return super().__call__(
                prompt=prompt, prompt_2=prompt_2, negative_prompt=negative_prompt, negative_prompt_2=negative_prompt_2,
                height=height, width=width, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                num_images_per_prompt=num_images_per_prompt, generator=generator,
                cross_attention_kwargs=attention_kwargs, **kwargs,
            )
