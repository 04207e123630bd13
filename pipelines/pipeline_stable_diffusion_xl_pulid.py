"""PuLID (v1, v1.1) for Stable Diffusion XL: ID tokens from an ArcFace embedding and an EVA02-CLIP
view of the face, added in every UNet cross-attention by an (orthogonalised) ID attention.

Same math and checkpoints as the official `pulid/pipeline.py` / `pipeline_v1_1.py`: the official
`pulid_v1.bin` / `pulid_v1.1.safetensors` and `EVA02_CLIP_L_336_psz14_s6B.pt` load unchanged, and
on the same tiny weights the ID tokens, the ID attention and (v1) a whole generation equal the
official code (`tests/test_pulid.py`). The denoising loop is diffusers' own
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
from idgen.identity import FaceEmbedsInput, resolve_face_embeds
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
    def encode_identity(self, arcface: torch.Tensor, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(negative, positive)` ID tokens `[1, T, cross_attention_dim]` (official `get_id_embedding`):
        the condition `[raw ArcFace [1, 512], L2-normalised EVA embedding]` and the EVA hidden
        states go through the ID encoder; the negative is the encoder of all-zero inputs."""
        device = self.pulid_adapter.device
        embedding, hidden = self.eva_clip(pixel_values.to(device, self.eva_clip.dtype))
        embedding = embedding / torch.norm(embedding, 2, 1, True)
        condition = torch.cat([arcface.to(device, embedding.dtype).reshape(1, -1), embedding], dim=-1)
        positive = self.pulid_adapter(condition, hidden)
        negative = self.pulid_adapter(torch.zeros_like(condition), [torch.zeros_like(h) for h in hidden])
        return negative, positive

    def _identity_tokens(self, face_image, face_embeds, id_image, face_mask) -> tuple[torch.Tensor, torch.Tensor]:
        if (face_image is None) == (face_embeds is None):
            raise IdgenError("Give exactly one of `face_image` (a photo) and `face_embeds` (a 512-d ArcFace embedding).")
        if face_image is not None:
            analyzer = self.face_analyzer or get_face_analyzer()
            self.face_analyzer = analyzer
            if getattr(analyzer, "embedding_dim", ARCFACE_DIM) != ARCFACE_DIM:
                raise IdgenError(
                    f"PuLID needs {ARCFACE_DIM}-d raw ArcFace embeddings, but the face analyzer "
                    f"{getattr(analyzer, 'name', '?')!r} gives {analyzer.embedding_dim}-d; configure an insightface "
                    "pack (antelopev2) for the official embedding, or pass `face_embeds` and `id_image`."
                )
            face_image = load_image(face_image)
            face = analyzer.get(face_image, select="largest")
            arcface = resolve_face_embeds([face], None, analyzer=None, dim=ARCFACE_DIM, normalize=False)
            if id_image is None:
                id_image = align_face(face_image, face.kps, size=FACE_CROP_SIZE, mode="ffhq").image
        else:
            arcface = resolve_face_embeds(face_embeds, None, analyzer=None, dim=ARCFACE_DIM, normalize=False)
            if id_image is None:
                raise IdgenError("with `face_embeds`, give `id_image` (the aligned face crop) for EVA-CLIP, or give `face_image`.")
        if arcface.shape[0] != 1:
            arcface = arcface.mean(0, keepdim=True)
        if face_mask is None and self.face_parser is not None:
            face_mask = self.face_features_mask(id_image)
        return self.encode_identity(arcface, self.eva_pixel_values(id_image, face_mask))

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
                 ortho: Optional[str] = None,
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
            face_image: a photo of the person: its largest face gives the ArcFace embedding and
                (unless `id_image`) the aligned 512 crop for EVA-CLIP.
            face_embeds: instead, a raw (un-normalised) ArcFace embedding `[512]` / `[N, 512]` (N
                averaged) or a `Face` record; needs `id_image`.
            id_image: the aligned face crop (square RGB, e.g. the official 512 crop) for EVA-CLIP.
            face_mask: `[H, W]` of the crop, 1 / 255 on the face features, 0 elsewhere (white there).
            id_embeds: precomputed `(negative, positive)` ID tokens `[1, T, C]` (`encode_identity`),
                instead of the face inputs.
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
            negative, positive = self._identity_tokens(face_image, face_embeds, id_image, face_mask)
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
