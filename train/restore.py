"""Training the restoration ControlNet of `FaceRestorePipeline` (`idgen train restore`).

Pairs are made on the fly: each clean face (a folder of aligned face photos, or a prepared dataset
from `idgen prepare-data`) is degraded by `idgen.media.degrade` with a preset, seeded by the loop's
per-step generator (so a resumed run sees the same pairs). The ControlNet, initialised from the
frozen UNet, sees the degraded image; the UNet denoises the clean image's latents (the standard
ControlNet recipe) with a generic caption, dropped with probability `caption_dropout`. Writes
`controlnet/`: `FaceRestorePipeline(..., controlnet=ControlNetModel.from_pretrained(out / "controlnet"))`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from idgen.errors import IdgenError

from idgen.train.diffusion import diffusion_loss, encode_captions, encode_latents, freeze_base, is_sdxl, load_base, noise_and_timesteps, training_target
from idgen.train.examples import FaceExamples, PhotoFolder, collate, is_prepared_dataset
from idgen.train.loop import TrainingTask
from idgen.train.options import RestoreOptions, TrainingArgs
from idgen.media.degrade import degrade
from idgen.pipelines.pipeline_face_restore import FaceRestorePipeline


class RestoreTask(TrainingTask):
    name = "restore"

    def __init__(self, options: RestoreOptions, args: TrainingArgs):
        self.opts, self.args = options, args

    def setup(self, accelerator, weight_dtype) -> None:
        from diffusers import ControlNetModel, DDPMScheduler, StableDiffusionPipeline


        o = self.opts
        self.data = (FaceExamples(o.data, o.resolution, caption=o.caption)
                     if is_prepared_dataset(o.data) else PhotoFolder(Path(o.data), o.resolution, o.caption))
        base = load_base((StableDiffusionPipeline, StableDiffusionPipeline), o.base)
        if is_sdxl(base):
            raise IdgenError("restoration training supports SD1.5 bases (FaceRestorePipeline); give an SD1.5 --base.")
        if o.controlnet:
            controlnet = ControlNetModel.from_pretrained(o.controlnet, local_files_only=True)
        else:  # the condition encoder downsamples by the VAE factor: one stage per factor of 2, plus one
            stages = int(math.log2(base.vae_scale_factor)) + 1
            controlnet = ControlNetModel.from_unet(base.unet, conditioning_channels=3,
                                                   conditioning_embedding_out_channels=(16, 32, 96, 256)[:stages])
        components = {k: v for k, v in base.components.items() if k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
        self.pipe = FaceRestorePipeline(**components, controlnet=controlnet)
        self.pipe.set_progress_bar_config(disable=True)
        self.noise_scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        freeze_base(self.pipe, weight_dtype)
        self.pipe.controlnet.requires_grad_(True).train()
        self.pipe.to(accelerator.device)
        if self.args.gradient_checkpointing:
            self.pipe.controlnet.enable_gradient_checkpointing()

    def dataset(self):
        return self.data

    def collate(self, items):
        return collate(items)

    def trainable_modules(self):
        return [self.pipe.controlnet]

    def degraded(self, pixel_values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Degraded copies `[B, 3, R, R]` in [0, 1] (ControlNet's condition range) of clean images in
        [-1, 1], one draw each, seeded from `generator`."""

        clean = ((pixel_values.permute(0, 2, 3, 1).cpu().numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
        seeds = torch.randint(0, 2**31 - 1, (len(clean),), generator=generator).tolist()
        out = [degrade(img, self.opts.preset, seed=s, tasks=self.opts.task_list).image for img, s in zip(clean, seeds)]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0

    def loss(self, batch, generator, modules):
        controlnet = modules[0]
        cond = self.degraded(batch["pixel_values"], generator)
        drop = (torch.rand(len(batch["caption"]), generator=generator) < self.opts.caption_dropout).tolist()
        captions = ["" if d else c for c, d in zip(batch["caption"], drop)]
        with torch.no_grad():
            embeds, _ = encode_captions(self.pipe, captions, (self.opts.resolution,) * 2)
        latents = encode_latents(self.pipe.vae, batch["pixel_values"], generator)
        noise, timesteps = noise_and_timesteps(latents, self.noise_scheduler, generator, self.args.noise_offset)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps).to(self.pipe.unet.dtype)
        down, mid = controlnet(noisy, timesteps, encoder_hidden_states=embeds, return_dict=False,
                               controlnet_cond=cond.to(device=noisy.device, dtype=noisy.dtype))
        pred = self.pipe.unet(noisy, timesteps, encoder_hidden_states=embeds, down_block_additional_residuals=down,
                              mid_block_additional_residual=mid).sample
        target = training_target(self.noise_scheduler, latents, noise, timesteps)
        return diffusion_loss(pred, target, timesteps, self.noise_scheduler, self.args.snr_gamma)

    def validate(self, out_dir: Path, step: int) -> list[Path]:
        from PIL import Image

        out_dir.mkdir(parents=True, exist_ok=True)
        first = self.data[0]["pixel_values"][None]
        cond = (self.degraded(first, torch.Generator().manual_seed(self.args.seed))[0].permute(1, 2, 0).numpy() * 255)
        r = self.opts.resolution
        image = self.pipe(image=Image.fromarray(cond.astype(np.uint8)), height=r, width=r,
                          num_inference_steps=self.opts.validation_inference_steps,
                          generator=torch.Generator().manual_seed(self.args.seed)).images[0]
        path = out_dir / f"step-{step:06d}.png"
        image.save(path)
        return [path]

    def save_weights(self, out_dir: Path) -> list[Path]:
        path = out_dir / "controlnet"
        self.pipe.controlnet.save_pretrained(path)
        return [path]
