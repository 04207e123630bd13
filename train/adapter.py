"""Identity-adapter training on a frozen base: FaceID, InstantID (SDXL and SD1.5), Arc2Face.

One recipe for every kind (IP-Adapter's): a prepared face dataset with precomputed identity
embeddings (`idgen prepare-data`; the face model is not run in the loop), condition dropout
(text, identity, both: 0.05 each by default), the denoising loss with optional noise offset and
Min-SNR weighting. What each kind trains, and what it writes:

- `faceid`: the FaceID MLP projection, the identity key/value projections of every
  cross-attention (initialised from the text ones), optionally the built-in LoRA (rank
  `--lora-rank`, B initialised to zero). Writes `ip-adapter-faceid.safetensors` in the official
  layout: `pipe.load_faceid(path)` of `StableDiffusionFaceIDPipeline` / `StableDiffusionXLFaceIDPipeline` reads it.
- `instantid`: the Resampler, the identity key/value projections, and the IdentityNet (a
  ControlNet initialised from the UNet, or from `--controlnet`). Writes `ip-adapter.safetensors`
  (official keys), `ControlNetModel/` and `resampler_config.json`: load with
  `ControlNetModel.from_pretrained(out / "ControlNetModel")` and
  `pipe.load_instantid(out / "ip-adapter.safetensors", resampler_config=json.load(...))`.
  SDXL bases give an `StableDiffusionXLInstantIDPipeline`, SD1.5 bases a `StableDiffusionInstantIDPipeline`.
- `arc2face`: the CLIP text encoder that reads the identity token. Writes `encoder/` (a
  transformers folder): `Arc2FacePipeline(..., text_encoder=CLIPTextModel.from_pretrained(out / "encoder"))`.
- `pva`: PVA's identity encoder and visual projections (initialised from the text ones) on a
  frozen inpainting UNet (9 channels); each example repaints its face region (an ellipse around
  the keypoints, randomly grown) given its own identity. Writes `pva_adapter/`:
  `StableDiffusionPVAInpaintPipeline.load_pva(out / "pva_adapter")`. The paper's per-identity quick fine-tune is
  the same command on one person's photos with `--init-adapter <pva_adapter/>` and about 40 steps.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from idgen.errors import DatasetError, IdgenError

from idgen.train.diffusion import (diffusion_loss, encode_captions, encode_latents, freeze_base, is_sdxl, load_base, noise_and_timesteps,
                        training_target)
from idgen.train.examples import FaceExamples, collate
from idgen.train.loop import TrainingTask
from idgen.train.options import AdapterOptions, TrainingArgs

logger = logging.getLogger(__name__)

ARCFACE_DIM = 512


def condition_dropout(batch_size: int, options: AdapterOptions, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks `[B]` (drop text, drop identity): one uniform draw per sample, split into
    text-only / identity-only / both with the configured probabilities (IP-Adapter's recipe)."""
    u = torch.rand(batch_size, generator=generator)
    t, i, b = options.text_dropout, options.identity_dropout, options.both_dropout
    text_only, id_only, both = u < t, (u >= t) & (u < t + i), (u >= t + i) & (u < t + i + b)
    return text_only | both, id_only | both


class AdapterTask(TrainingTask):
    """The shared part of identity-adapter training; subclasses build and run one kind."""

    pipeline_classes: tuple = ()  # (SD1.5 class, SDXL class) of the pipeline being trained

    def __init__(self, options: AdapterOptions, args: TrainingArgs):
        self.opts, self.args = options, args
        self.name = f"adapter-{options.kind}"

    def setup(self, accelerator, weight_dtype) -> None:
        from diffusers import DDPMScheduler

        o = self.opts
        self.data = FaceExamples(o.data, o.resolution, normalize=self.normalize_embeddings, caption=o.caption)
        self.check_embedding_dim(self.data.embedding_dim)
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        base = load_base((StableDiffusionPipeline, StableDiffusionXLPipeline), o.base, tiny_text_width=o.tiny_text_width)
        self.pipe = rebuild_pipeline(self.pipeline_classes[int(is_sdxl(base))], base, **self.extra_components(base))
        self.pipe.set_progress_bar_config(disable=True)
        self.noise_scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        freeze_base(self.pipe, weight_dtype)
        self.build_adapter()
        self.pipe.to(accelerator.device)
        if self.args.gradient_checkpointing:
            self.pipe.unet.enable_gradient_checkpointing()

    # subclass hooks ---------------------------------------------------------------------------
    normalize_embeddings = True

    def extra_components(self, base) -> dict:
        """Components the trained pipeline has and the base folder lacks."""
        return {}

    def check_embedding_dim(self, dim: int) -> None:
        if dim != ARCFACE_DIM:
            raise DatasetError(
                f"{self.opts.kind} adapters take {ARCFACE_DIM}-d ArcFace embeddings; this dataset has {dim}-d "
                "ones. Prepare it with `idgen prepare-data --backend insightface` (an antelopev2/buffalo_l pack).")

    def build_adapter(self) -> None:
        raise NotImplementedError

    def predict(self, modules, noisy, timesteps, captions, face_embeds, batch):
        """The noise prediction `[B, 4, h, w]`; dropped identities arrive as zero embeddings."""
        raise NotImplementedError

    # shared ------------------------------------------------------------------------------------
    def dataset(self):
        return self.data

    def collate(self, items):
        return collate(items)

    def text(self, captions):
        """Prompt embeddings and added conditions of the (frozen) text encoders."""
        with torch.no_grad():
            return encode_captions(self.pipe, captions, (self.opts.resolution,) * 2)

    def loss(self, batch, generator, modules):
        drop_text, drop_id = condition_dropout(len(batch["caption"]), self.opts, generator)
        captions = ["" if d else c for c, d in zip(batch["caption"], drop_text.tolist())]
        face_embeds = batch["face_embeds"].masked_fill(drop_id[:, None], 0.0).to(self.pipe.unet.device)
        latents = encode_latents(self.pipe.vae, batch["pixel_values"], generator)
        noise, timesteps = noise_and_timesteps(latents, self.noise_scheduler, generator, self.args.noise_offset)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps).to(self.pipe.unet.dtype)
        pred = self.predict(modules, noisy, timesteps, captions, face_embeds, batch)
        target = training_target(self.noise_scheduler, latents, noise, timesteps)
        return diffusion_loss(pred, target, timesteps, self.noise_scheduler, self.args.snr_gamma)

    def validation_embeds(self) -> torch.Tensor:
        """The identity of the first training record, `[1, D]`."""
        return self.data[0]["face_embeds"][None]

    def validate(self, out_dir: Path, step: int) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        generator = torch.Generator().manual_seed(self.args.seed)
        images = self.generate(self.validation_embeds(), generator, output_type="pil")
        path = out_dir / f"step-{step:06d}.png"
        images[0].save(path)
        return [path]

    def generate(self, face_embeds: torch.Tensor, generator, **kwargs):
        """Images of `face_embeds` `[1, D]` through the user-facing pipeline."""
        r = self.opts.resolution
        kwargs.setdefault("num_inference_steps", self.opts.validation_inference_steps)
        return self.pipe(face_embeds=face_embeds, height=r, width=r, generator=generator, **self.pipeline_kwargs(), **kwargs).images

    def pipeline_kwargs(self) -> dict:
        caption = self.opts.caption or self.data[0]["caption"]
        return {"prompt": caption}


# ---------------------------------------------------------------------------------------- FaceID
class FaceIDTask(AdapterTask):
    """IP-Adapter-FaceID: MLP projection + identity K/V + the built-in LoRA."""

    @property
    def pipeline_classes(self):
        from idgen.pipelines import StableDiffusionFaceIDPipeline, StableDiffusionXLFaceIDPipeline

        return (StableDiffusionFaceIDPipeline, StableDiffusionXLFaceIDPipeline)

    def build_adapter(self) -> None:
        from peft.tuners.lora import LoraLayer

        from idgen.adapters.faceid import FACEID_ADAPTER_NAME, FaceIDSpec, expected_layout

        unet = self.pipe.unet
        spec = FaceIDSpec("faceid", int(unet.config.cross_attention_dim), num_tokens=self.opts.num_tokens,
                          lora_rank=self.opts.lora_rank)
        # Install through the official-layout loader (shapes only), then initialise for training.
        layout = expected_layout(unet, spec)
        self.pipe.load_faceid({part: {k: torch.zeros(s) for k, s in keys.items()} for part, keys in layout.items()},
                              variant="faceid")
        with torch.no_grad():
            projection = unet.encoder_hid_proj
            for module in projection.modules():
                if hasattr(module, "reset_parameters") and module is not projection:
                    module.reset_parameters()
            for name, proc in unet.attn_processors.items():
                if hasattr(proc, "to_k_ip"):  # IP-Adapter's init: identity K/V start as the text K/V
                    attn = unet.get_submodule(name[: -len(".processor")])
                    proc.to_k_ip[0].weight.copy_(attn.to_k.weight)
                    proc.to_v_ip[0].weight.copy_(attn.to_v.weight)
            for module in unet.modules():
                if isinstance(module, LoraLayer) and FACEID_ADAPTER_NAME in module.lora_A:
                    module.reset_lora_parameters(FACEID_ADAPTER_NAME, True)  # A: Kaiming, B: zero
        unet.requires_grad_(False)
        projection.requires_grad_(True)
        for proc in unet.attn_processors.values():
            if hasattr(proc, "to_k_ip"):
                proc.requires_grad_(True)
        if self.opts.train_lora:
            for name, p in unet.named_parameters():
                if f".{FACEID_ADAPTER_NAME}." in name and "lora_" in name:
                    p.requires_grad_(True)

    def trainable_modules(self):
        return [self.pipe.unet]

    def predict(self, modules, noisy, timesteps, captions, face_embeds, batch):
        embeds, added = self.text(captions)
        added = {**added, "image_embeds": [face_embeds[:, None, :].to(self.pipe.unet.dtype)]}
        return modules[0](noisy, timesteps, encoder_hidden_states=embeds, added_cond_kwargs=added).sample

    def save_weights(self, out_dir: Path) -> list[Path]:
        from safetensors.torch import save_file

        official = self.pipe.faceid_state_dict()
        flat = {f"{part}.{k}": v.detach().float().cpu().contiguous() for part, sd in official.items() for k, v in sd.items()}
        path = out_dir / "ip-adapter-faceid.safetensors"
        save_file(flat, str(path), metadata={"format": "pt", "idgen_kind": "faceid"})
        return [path]


# -------------------------------------------------------------------------------------- InstantID
class InstantIDTask(AdapterTask):
    """InstantID: Resampler + identity K/V + IdentityNet; SDXL or SD1.5 base."""

    normalize_embeddings = False  # InstantID takes the raw ArcFace embedding

    @property
    def pipeline_classes(self):
        from idgen.pipelines import StableDiffusionXLInstantIDPipeline, StableDiffusionInstantIDPipeline

        return (StableDiffusionInstantIDPipeline, StableDiffusionXLInstantIDPipeline)

    def check_embedding_dim(self, dim: int) -> None:
        self.embedding_dim = dim  # the Resampler's input width follows the dataset

    def resampler_config(self) -> dict:
        config = json.loads(self.opts.resampler_config) if self.opts.resampler_config else {}
        return {**config, "embedding_dim": self.embedding_dim}

    def extra_components(self, base) -> dict:
        from diffusers import ControlNetModel

        if self.opts.controlnet:
            return {"controlnet": ControlNetModel.from_pretrained(self.opts.controlnet, local_files_only=True)}
        # the keypoint encoder downsamples by the VAE factor (8 for SD: ControlNet's default 4 stages)
        stages = int(math.log2(base.vae_scale_factor)) + 1
        return {"controlnet": ControlNetModel.from_unet(base.unet, conditioning_channels=3,
                                                        conditioning_embedding_out_channels=(16, 32, 96, 256)[:stages])}

    def build_adapter(self) -> None:
        from idgen.adapters.instantid import InstantIDAdapter, ResamplerConfig, official_state_dict

        pipe, unet = self.pipe, self.pipe.unet
        config = ResamplerConfig.from_mapping(self.resampler_config(), output_dim=unet.config.cross_attention_dim)
        adapter = InstantIDAdapter.for_unet(unet, config)
        with torch.no_grad():  # IP-Adapter's init: identity K/V start as the text K/V
            for k, name in adapter.layer_names.items():
                attn = unet.get_submodule(name[: -len(".processor")])
                adapter.ip_adapter[str(k)].to_k_ip.weight.copy_(attn.to_k.weight)
                adapter.ip_adapter[str(k)].to_v_ip.weight.copy_(attn.to_v.weight)
        pipe.load_instantid(official_state_dict(adapter), resampler_config=config.to_dict())
        pipe.identity_adapter.requires_grad_(True).train()
        pipe.controlnet.requires_grad_(self.opts.train_identitynet)

    def trainable_modules(self):
        return [self.pipe.identity_adapter] + ([self.pipe.controlnet] if self.opts.train_identitynet else [])

    def collate(self, items):
        """Adds `kps_image` `[B, 3, R, R]` in [0, 1]: the official keypoint drawing of each face."""
        from idgen.conditioning import draw_kps

        batch = collate(items)
        r = self.opts.resolution
        drawn = [np.asarray(draw_kps((r, r), kps.numpy()), dtype=np.float32) / 255.0 for kps in batch["kps"]]
        batch["kps_image"] = torch.from_numpy(np.stack(drawn)).permute(0, 3, 1, 2).contiguous()
        return batch

    def predict(self, modules, noisy, timesteps, captions, face_embeds, batch):
        from idgen.adapters.instantid import IdentityAttentionInputs, identity_processors_installed

        pipe = self.pipe
        adapter = modules[0]
        controlnet = modules[1] if self.opts.train_identitynet else pipe.controlnet
        embeds, added = self.text(captions)
        tokens, layer_kv = adapter(face_embeds[:, None, :], return_kv=True)
        inputs = IdentityAttentionInputs(kv={k: [kv] for k, kv in layer_kv.items()},
                                         scales={k: [1.0] for k in layer_kv}, masks=[None],
                                         latent_size=tuple(noisy.shape[-2:]))
        cond = batch["kps_image"].to(device=noisy.device, dtype=noisy.dtype)
        down, mid = controlnet(noisy, timesteps, encoder_hidden_states=tokens.to(noisy.dtype), controlnet_cond=cond,
                               added_cond_kwargs=added or None, return_dict=False)
        with identity_processors_installed(pipe.unet, pipe.identity_adapter):  # installed per call, as in the pipelines
            return pipe.unet(noisy, timesteps, encoder_hidden_states=embeds, cross_attention_kwargs={"ip_hidden_states": inputs},
                             down_block_additional_residuals=down, mid_block_additional_residual=mid,
                             added_cond_kwargs=added or None).sample

    def pipeline_kwargs(self) -> dict:
        from idgen.conditioning import draw_kps

        r = self.opts.resolution
        kps = self.data[0]["kps"].numpy()
        return {**super().pipeline_kwargs(), "image": draw_kps((r, r), kps)}

    def save_weights(self, out_dir: Path) -> list[Path]:
        from safetensors.torch import save_file

        from idgen.adapters.instantid import official_state_dict

        adapter = self.pipe.identity_adapter
        path = out_dir / "ip-adapter.safetensors"
        save_file({k: v.detach().float().cpu().contiguous() for k, v in official_state_dict(adapter).items()},
                  str(path), metadata={"format": "pt", "idgen_kind": "instantid"})
        config_path = out_dir / "resampler_config.json"
        config_path.write_text(json.dumps({k: adapter.config[k] for k in
                                           ("dim", "depth", "dim_head", "heads", "num_queries", "embedding_dim", "ff_mult")}, indent=2))
        self.pipe.controlnet.save_pretrained(out_dir / "ControlNetModel")
        return [path, config_path, out_dir / "ControlNetModel"]


# --------------------------------------------------------------------------------------- Arc2Face
class Arc2FaceTask(AdapterTask):
    """Arc2Face: fine-tune the CLIP text encoder that reads the identity token."""

    @property
    def pipeline_classes(self):
        from idgen.pipelines import Arc2FacePipeline

        return (Arc2FacePipeline, Arc2FacePipeline)

    def build_adapter(self) -> None:
        from idgen.adapters.arc2face import id_token_id

        if is_sdxl(self.pipe):
            raise IdgenError("Arc2Face is an SD1.5 architecture; give an SD1.5 --base.")
        width = self.pipe.text_encoder.config.hidden_size
        if width < ARCFACE_DIM:
            raise IdgenError(f"the text encoder is {width} wide; Arc2Face needs at least {ARCFACE_DIM}.")
        id_token_id(self.pipe.tokenizer)  # fails clearly when the tokenizer has no "id" token
        self.pipe.text_encoder.requires_grad_(True).train()

    def trainable_modules(self):
        return [self.pipe.text_encoder]

    def predict(self, modules, noisy, timesteps, captions, face_embeds, batch):
        from idgen.adapters.arc2face import encode_identity

        text_encoder = self.pipe.text_encoder
        identity = encode_identity(modules[0], self.pipe.tokenizer, face_embeds.to(text_encoder.dtype))
        # a dropped identity (or text) is the empty prompt: the pipelines' negative
        dropped = (face_embeds.abs().sum(-1) == 0).tolist()
        if any(dropped):
            empty, _ = encode_captions(self.pipe, [""], (self.opts.resolution,) * 2, [modules[0]])
            identity = torch.where(torch.tensor(dropped, device=identity.device)[:, None, None], empty.expand_as(identity), identity)
        return self.pipe.unet(noisy, timesteps, encoder_hidden_states=identity).sample

    def pipeline_kwargs(self) -> dict:
        return {}

    def save_weights(self, out_dir: Path) -> list[Path]:
        path = out_dir / "encoder"
        self.pipe.text_encoder.save_pretrained(path)
        return [path]


# ---------------------------------------------------------------------------------------- PVA
class PVATask(AdapterTask):
    """PVA: identity encoder + parallel visual attention on a frozen inpainting UNet."""

    @property
    def pipeline_classes(self):
        from idgen.pipelines import StableDiffusionPVAInpaintPipeline, StableDiffusionXLPVAInpaintPipeline

        return (StableDiffusionPVAInpaintPipeline, StableDiffusionXLPVAInpaintPipeline)

    def build_adapter(self) -> None:
        if self.pipe.unet.config.in_channels != 9:
            raise IdgenError(
                f"PVA trains on an inpainting UNet (9 input channels); this base's UNet has "
                f"{self.pipe.unet.config.in_channels}. Use an inpainting base (e.g. stable-diffusion-2-inpainting).")
        o = self.opts
        if o.init_adapter:
            self.pipe.load_pva(o.init_adapter, num_heads=o.pva_heads)
        else:
            self.pipe.init_pva(num_tokens=o.pva_tokens, num_layers=o.pva_layers, num_heads=o.pva_heads)
        self.pipe.pva_adapter.requires_grad_(True).train()

    def trainable_modules(self):
        return [self.pipe.pva_adapter]

    def face_masks(self, kps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Repaint masks `[B, 1, R, R]` (1 = repaint): an ellipse around each face's keypoints,
        grown by a random 15-35% of the keypoint span (PVA's "wholeface" region)."""
        from idgen.conditioning import face_mask
        from idgen.face.types import Face

        r = self.opts.resolution
        grow = 0.15 + 0.2 * torch.rand(len(kps), generator=generator)
        masks = []
        for points, g in zip(kps.numpy(), grow.tolist()):
            lo, hi = points.min(0), points.max(0)
            span = hi - lo
            box = np.concatenate([lo - span * (0.5 + g), hi + span * (0.5 + g) + [0, span[1] * 0.5]])
            face = Face(bbox=box.astype(np.float32), kps=points, score=1.0, image_size=(r, r))
            masks.append(face_mask((r, r), face))
        return torch.from_numpy(np.stack(masks))[:, None]

    def predict(self, modules, noisy, timesteps, captions, face_embeds, batch):
        adapter = modules[0]
        embeds, added = self.text(captions)
        dropped = face_embeds.abs().sum(-1) == 0
        tokens = adapter(face_embeds[:, None, :])
        inputs = adapter.inputs(tokens.to(noisy.dtype), dropped=dropped if dropped.any() else None)
        model_input = torch.cat([noisy, batch["mask_latents"], batch["masked_latents"]], dim=1).to(noisy.dtype)
        return self.pipe.unet(model_input, timesteps, encoder_hidden_states=embeds, added_cond_kwargs=added or None,
                              cross_attention_kwargs={"ip_hidden_states": inputs}).sample

    def loss(self, batch, generator, modules):
        """The inpainting loss: the UNet sees the noisy latents, the downsampled mask and the
        latents of the image with its face removed (diffusers' inpainting-training recipe)."""
        mask = self.face_masks(batch["kps"], generator)
        masked = batch["pixel_values"] * (mask < 0.5)
        latents = encode_latents(self.pipe.vae, masked, generator)
        batch = {**batch, "masked_latents": latents,
                 "mask_latents": torch.nn.functional.interpolate(mask, size=latents.shape[-2:]).to(latents.device)}
        return super().loss(batch, generator, modules)

    def generate(self, face_embeds: torch.Tensor, generator, **kwargs):
        """As the base class, with the identity encoder's dropout off (eval mode) for sampling."""
        adapter = self.pipe.pva_adapter
        was_training = adapter.training
        adapter.eval()
        try:
            return super().generate(face_embeds, generator, **kwargs)
        finally:
            adapter.train(was_training)

    def pipeline_kwargs(self) -> dict:
        from PIL import Image

        first = self.data[0]
        pixels = ((first["pixel_values"].permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
        mask = self.face_masks(first["kps"][None], torch.Generator().manual_seed(0))[0, 0].numpy()
        return {**super().pipeline_kwargs(), "image": Image.fromarray(pixels),
                "mask_image": Image.fromarray((mask * 255).astype(np.uint8))}

    def save_weights(self, out_dir: Path) -> list[Path]:
        path = out_dir / "pva_adapter"
        self.pipe.pva_adapter.save_pretrained(path)
        return [path]


def rebuild_pipeline(cls, base, **extra):
    """A `cls` pipeline on the components of the loaded `base` pipeline (plus `extra`)."""
    import inspect

    accepted = inspect.signature(cls.__init__).parameters
    components = {k: v for k, v in base.components.items() if k in accepted}
    if "requires_safety_checker" in accepted:
        components["requires_safety_checker"] = False
    return cls(**components, **extra)


TASKS = {"faceid": FaceIDTask, "instantid": InstantIDTask, "arc2face": Arc2FaceTask, "pva": PVATask}


def adapter_task(options: AdapterOptions, args: TrainingArgs) -> AdapterTask:
    return TASKS[options.kind](options, args)
