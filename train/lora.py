"""DreamBooth-LoRA personalization of SD1.5 / SDXL (a person from 5-20 photos).

peft `LoraConfig` on the UNet's attention projections (and optionally the text encoders'), an
instance prompt with a rare token, optional prior preservation with class images (generated
with the base model when too few are given), and the result saved with diffusers'
`save_lora_weights` (`pytorch_lora_weights.safetensors`), which `load_lora_weights` of diffusers'
and idgen's pipelines reads.

    idgen train lora --base PATH --instance-data PHOTOS --instance-prompt "a photo of sks person" \
        --output-dir out/lora [--with-prior-preservation --class-data DIR --class-prompt "a photo of a person"]
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model

from idgen.train.diffusion import (diffusion_loss, encode_captions, encode_latents, freeze_base, is_sdxl, load_base, noise_and_timesteps,
                        training_target)
from idgen.train.examples import FaceExamples, PhotoFolder, collate, is_prepared_dataset
from idgen.image_io import IMAGE_SUFFIXES
from idgen.train.loop import TrainingTask
from idgen.train.options import LoRAOptions, TrainingArgs

logger = logging.getLogger(__name__)

UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def attach_text_encoder_lora(encoder: torch.nn.Module, config: LoraConfig, adapter_name: str = "default") -> None:
    """Attach a fresh, trainable LoRA to a transformers text encoder through peft itself.

    Written by hand rather than calling transformers' `encoder.add_adapter`: that method refuses every
    peft older than the one its transformers release names (transformers 5.24 asks for peft >= 0.22,
    which was not released), although the injection itself is peft's `inject_adapter_in_model`. The
    `peft_config` dict is what peft's `get_peft_model_state_dict` and diffusers' LoRA metadata read.
    """
    inject_adapter_in_model(config, encoder, adapter_name)
    configs = getattr(encoder, "peft_config", None) or {}
    encoder.peft_config = {**configs, adapter_name: config}


class _DreamBoothExamples(torch.utils.data.Dataset):
    """Instance examples, each paired with a class example when prior preservation is on
    (length: the larger of the two, as in diffusers' DreamBooth dataset)."""

    def __init__(self, instance, klass=None):
        self.instance, self.klass = instance, klass

    def __len__(self) -> int:
        return max(len(self.instance), len(self.klass) if self.klass is not None else 0)

    def __getitem__(self, i: int) -> dict:
        item = {k: v for k, v in self.instance[i % len(self.instance)].items() if k in ("pixel_values", "caption")}
        if self.klass is not None:
            other = self.klass[i % len(self.klass)]
            item["class_pixel_values"], item["class_caption"] = other["pixel_values"], other["caption"]
        return item


class LoRATask(TrainingTask):
    name = "lora"

    def __init__(self, options: LoRAOptions, args: TrainingArgs):
        self.opts, self.args = options, args

    # ----------------------------------------------------------------------------- set-up
    def setup(self, accelerator, weight_dtype) -> None:
        from diffusers import DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
        o = self.opts
        kwargs = {"config_folder": o.config_folder} if o.config_folder else {}
        self.pipe = pipe = load_base((StableDiffusionPipeline, StableDiffusionXLPipeline), o.base, **kwargs)
        pipe.set_progress_bar_config(disable=True)
        self.device, self.xl = accelerator.device, is_sdxl(pipe)
        pipe.to(accelerator.device)
        freeze_base(pipe, weight_dtype)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        if o.with_prior_preservation:
            self._fill_class_images(accelerator)
        alpha = o.lora_alpha or o.rank
        pipe.unet.add_adapter(LoraConfig(r=o.rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=UNET_TARGETS))
        self.text_encoders = [e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e is not None]
        if o.train_text_encoder:
            for encoder in self.text_encoders:
                attach_text_encoder_lora(encoder, LoraConfig(r=o.rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                                             target_modules=TEXT_TARGETS))
        if self.args.gradient_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
            if o.train_text_encoder:
                for encoder in self.text_encoders:
                    encoder.gradient_checkpointing_enable()
                    # frozen embeddings give checkpointed blocks no input that requires grad; transformers
                    # only sets this for adapters attached through its own `add_adapter`
                    encoder.enable_input_require_grads()

    def _fill_class_images(self, accelerator) -> None:
        """Generate class images with the base model until `num_class_images` are there."""
        folder = Path(self.opts.class_data)
        folder.mkdir(parents=True, exist_ok=True)
        have = len([p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES])
        missing = self.opts.num_class_images - have
        if missing <= 0 or not accelerator.is_main_process:
            accelerator.wait_for_everyone()
            return
        logger.info("generating %d class images in %s", missing, folder)
        generator = torch.Generator().manual_seed(self.args.seed)
        for i in range(missing):
            image = self.pipe(self.opts.class_prompt, num_inference_steps=self.opts.validation_inference_steps,
                              height=self.opts.resolution, width=self.opts.resolution, generator=generator).images[0]
            image.save(folder / f"class-{have + i:05d}.png")
        accelerator.wait_for_everyone()

    # ------------------------------------------------------------------------------- data
    def dataset(self):
        o = self.opts
        if is_prepared_dataset(Path(o.instance_data)):
            instance = FaceExamples(o.instance_data, o.resolution, caption=o.instance_prompt)
        else:
            instance = PhotoFolder(Path(o.instance_data), o.resolution, o.instance_prompt)
        klass = PhotoFolder(Path(o.class_data), o.resolution, o.class_prompt) if o.with_prior_preservation else None
        return _DreamBoothExamples(instance, klass)

    def collate(self, items):
        return collate(items)

    # -------------------------------------------------------------------------- trainable
    def trainable_modules(self):
        return [self.pipe.unet] + (self.text_encoders if self.opts.train_text_encoder else [])

    def _named_modules(self):
        names = ["unet", "text_encoder", "text_encoder_2"][: len(self.trainable_modules())]
        return dict(zip(names, self.trainable_modules()))

    # ------------------------------------------------------------------------------- loss
    def loss(self, batch, generator, modules):
        unet = modules[0]
        encoders = modules[1:] if self.opts.train_text_encoder else None
        pixels, captions = batch["pixel_values"], list(batch["caption"])
        prior = "class_pixel_values" in batch
        if prior:
            pixels = torch.cat([pixels, batch["class_pixel_values"]])
            captions += list(batch["class_caption"])
        latents = encode_latents(self.pipe.vae, pixels, generator)
        noise, timesteps = noise_and_timesteps(latents, self.noise_scheduler, generator, self.args.noise_offset)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        with torch.set_grad_enabled(encoders is not None):
            embeds, added = encode_captions(self.pipe, captions, (self.opts.resolution,) * 2, encoders)
        pred = unet(noisy.to(self.pipe.unet.dtype), timesteps, encoder_hidden_states=embeds,
                    added_cond_kwargs=added or None).sample
        target = training_target(self.noise_scheduler, latents, noise, timesteps)
        gamma = self.args.snr_gamma
        if not prior:
            return diffusion_loss(pred, target, timesteps, self.noise_scheduler, gamma)
        (p_inst, p_cls), (t_inst, t_cls), (ts_inst, ts_cls) = pred.chunk(2), target.chunk(2), timesteps.chunk(2)
        return (diffusion_loss(p_inst, t_inst, ts_inst, self.noise_scheduler, gamma)
                + self.opts.prior_loss_weight * diffusion_loss(p_cls, t_cls, ts_cls, self.noise_scheduler, gamma))

    # ------------------------------------------------------------------------- validation
    def validate(self, out_dir: Path, step: int) -> list[Path]:
        o = self.opts
        out_dir.mkdir(parents=True, exist_ok=True)
        generator = torch.Generator().manual_seed(self.args.seed)
        images = self.pipe(o.validation_prompt or o.instance_prompt, num_images_per_prompt=o.num_validation_images,
                           num_inference_steps=o.validation_inference_steps, height=o.resolution, width=o.resolution,
                           generator=generator).images
        paths = [out_dir / f"step-{step:06d}-{i}.png" for i in range(len(images))]
        for image, path in zip(images, paths):
            image.save(path)
        return paths

    # ----------------------------------------------------------------------------- export
    def save_weights(self, out_dir: Path) -> list[Path]:
        from diffusers.training_utils import _collate_lora_metadata
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        named = self._named_modules()
        layers = {f"{name}_lora_layers": convert_state_dict_to_diffusers(get_peft_model_state_dict(m)) for name, m in named.items()}
        metadata = _collate_lora_metadata(named)
        type(self.pipe).save_lora_weights(out_dir, **layers, **metadata, weight_name=LORA_WEIGHT_NAME)
        return [out_dir / LORA_WEIGHT_NAME]
