"""Pieces of the denoising objective shared by the trainers: base-model loading, latents,
prompt conditioning (SD1.5 and SDXL), noise and timesteps, and the (Min-SNR weighted) loss."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from diffusers.training_utils import compute_snr

from idgen.errors import IdgenError, ModelNotFoundError
from idgen.models.resolve import load_pipeline, resolve_path
from idgen.testing import tiny_sd15_components, tiny_sdxl_components

logger = logging.getLogger(__name__)

TINY_BASES = {"tiny-sd15": "sd15", "tiny-sdxl": "sdxl", "tiny-sd15-inpaint": "sd15", "tiny-sdxl-inpaint": "sdxl"}


def is_sdxl_folder(path: Path) -> bool:
    """Whether a diffusers folder (its `model_index.json`) holds an SDXL pipeline."""
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelNotFoundError(f"{path} is not a diffusers pipeline folder (no model_index.json).")
    return "XL" in json.loads(index.read_text()).get("_class_name", "")


def load_base(pipeline_classes: tuple, base: str, *, tiny_text_width: int = 32, **kwargs):
    """The pipeline of `pipeline_classes = (sd15_class, sdxl_class)` on the base model `base`.

    `base` is a local diffusers folder, a single-file checkpoint (with `config_folder=` in
    kwargs when offline), a hub id already in the local cache, or `tiny-sd15` / `tiny-sdxl`: the
    random-weight embedded default (for tests and dry runs; its images are noise; `-inpaint`: a
    9-channel inpainting UNet) whose SD1.5
    text encoder is `tiny_text_width` wide.
    """

    sd15_cls, sdxl_cls = pipeline_classes
    if base in TINY_BASES:
        in_channels = 9 if base.endswith("-inpaint") else 4
        if TINY_BASES[base] == "sdxl":
            return sdxl_cls(**tiny_sdxl_components(0, in_channels=in_channels))
        return sd15_cls(**tiny_sd15_components(0, text_width=tiny_text_width, in_channels=in_channels),
                        requires_safety_checker=False)
    resolved = resolve_path(base, source="argument")
    if resolved is None:
        raise ModelNotFoundError(f"base model {base!r}: no such folder or file, and not a hub id in the local cache.")
    xl = is_sdxl_folder(resolved.path) if resolved.format == "folder" else kwargs.pop("sdxl", False)
    cls = sdxl_cls if xl else sd15_cls
    extra = {} if xl else {"safety_checker": None, "requires_safety_checker": False}
    return load_pipeline(cls, resolved, **extra, **kwargs)


def freeze_base(pipe, weight_dtype: torch.dtype) -> None:
    """Freeze the pipeline's UNet, VAE and text encoders; cast all but the VAE to `weight_dtype`
    (SD VAEs overflow in fp16, so it stays in fp32)."""
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.requires_grad_(False)
            if weight_dtype != torch.float32 and name != "vae":
                module.to(dtype=weight_dtype)


def is_sdxl(pipe) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None or getattr(pipe.unet.config, "addition_embed_type", None) == "text_time"


def encode_captions(pipe, captions: Sequence[str], size: tuple[int, int],
                    text_encoders: Optional[Sequence[torch.nn.Module]] = None) -> tuple[torch.Tensor, dict]:
    """Prompt embeddings `[B, 77, C]` and the UNet's `added_cond_kwargs` (SDXL: pooled text and
    time ids of an uncropped `size` = (height, width) image; SD1.5: `{}`), computed as the
    pipelines' `encode_prompt` does (SDXL: penultimate hidden states of both encoders, pooled
    output of the second).

    Written out rather than calling `pipe.encode_prompt` so that `text_encoders` can be the
    accelerate-prepared (DDP-wrapped) encoders when their LoRA is trained.
    """
    encoders = list(text_encoders) if text_encoders is not None else [
        e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e is not None]
    tokenizers = [t for t in (pipe.tokenizer, getattr(pipe, "tokenizer_2", None)) if t is not None]
    device = pipe.unet.device

    def ids(tokenizer):
        return tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids.to(device)

    if not is_sdxl(pipe):
        return encoders[0](ids(tokenizers[0]))[0], {}
    hidden, pooled = [], None
    for tokenizer, encoder in zip(tokenizers, encoders):
        out = encoder(ids(tokenizer), output_hidden_states=True)
        pooled = out[0]  # the last encoder's projected pooled output, as in diffusers
        hidden.append(out.hidden_states[-2])
    embeds = torch.cat(hidden, dim=-1)
    projection = int(pooled.shape[-1])
    time_ids = pipe._get_add_time_ids(tuple(size), (0, 0), tuple(size), dtype=embeds.dtype,
                                      text_encoder_projection_dim=projection)
    return embeds, {"text_embeds": pooled, "time_ids": time_ids.to(device).repeat(len(captions), 1)}


@torch.no_grad()
def encode_latents(vae, pixel_values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """VAE latents (sampled, scaled) `[B, 4, H/f, W/f]` of images `[B, 3, H, W]` in [-1, 1]."""
    pixels = pixel_values.to(device=vae.device, dtype=vae.dtype)
    latents = vae.encode(pixels).latent_dist.sample(generator=generator)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((latents - shift) * vae.config.scaling_factor).float()


def noise_and_timesteps(latents: torch.Tensor, scheduler, generator: torch.Generator, noise_offset: float = 0.0):
    """Gaussian noise like `latents` (plus `noise_offset` x per-channel noise) and uniform timesteps."""
    shape, device = latents.shape, latents.device
    noise = torch.randn(shape, generator=generator).to(device)
    if noise_offset:
        noise = noise + noise_offset * torch.randn((shape[0], shape[1], 1, 1), generator=generator).to(device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (shape[0],), generator=generator).to(device)
    return noise, timesteps


def training_target(scheduler, latents, noise, timesteps) -> torch.Tensor:
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise IdgenError(f"unsupported scheduler prediction_type {kind!r} (epsilon or v_prediction).")


def diffusion_loss(pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor, scheduler,
                   snr_gamma: Optional[float] = None, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error, per sample weighted by Min-SNR (Hang et al. 2023) when `snr_gamma` is
    set and by `weights` `[B]` (e.g. DreamBooth's prior-loss weight) when given."""
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=list(range(1, pred.ndim)))
    if snr_gamma is not None:
        snr = compute_snr(scheduler, timesteps)
        w = torch.stack([snr, snr_gamma * torch.ones_like(snr)], dim=1).min(dim=1)[0]
        per_sample = per_sample * (w / (snr + 1) if scheduler.config.prediction_type == "v_prediction" else w / snr)
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample)
    return per_sample.mean()
