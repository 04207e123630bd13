"""SVFR-style video face restoration on Stable Video Diffusion: `SVFRPipeline`.

The UNet (diffusers' `UNetSpatioTemporalConditionModel`, input widened to 12 channels by
`idgen.adapters.svfr.widen_conv_in`) denoises the restored clip's latents given, per frame and
concatenated on channels in the official order, the degraded frame's latent and a reference
frame's latent; the task code in SVD's added time ids; identity tokens in cross-attention. As in
the official `LQ2VideoLongSVDPipeline`:

- sampling starts from the degraded clip's latents noised to the first timestep (`strength` 1 =
  the largest σ, so in effect from noise);
- classifier-free guidance keeps the degraded latents in both branches and drops the reference
  latent and the identity tokens (zeros) in the negative one, with a scale ramped linearly from
  `min_guidance_scale` to `max_guidance_scale` over the steps. With neither reference nor identity
  both branches are the same, so the negative one is skipped;
- long clips are sampled with overlapping windows blended with triangular weights, the grid moved
  between steps (`idgen.adapters.svfr.windows`, which also lists where it departs from the
  official sampler); latents are decoded `decode_chunk_size` frames at a time.

Self-referred refinement (the SVFR paper): without a `reference`, a first pass restores the first
window without reference or identity; its sharpest frame (variance of the Laplacian; the official
script takes the window's last frame) becomes the reference — its latent, and its identity tokens
when `identity_fn` computes identity features for it — for the pass over the whole clip.

Input: aligned face crops of any length (`idgen.media.video_faces` makes them from real footage).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from diffusers import AutoencoderKLTemporalDecoder, DiffusionPipeline, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import StableVideoDiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from idgen.acceleration.mixin import AccelerationMixin
from idgen.adapters.svfr import (IDProjection, SVFR_IN_CHANNELS, SVFRConfig, check_task_conditioning,
                                 frame_weight_sums, load_id_projection, load_svfr_unet, task_vector, triangle_weights,
                                 window_shift, window_starts)
from idgen.errors import IdgenError
from idgen.validation import check_integer, check_sampling_arguments

OUTPUT_TYPES = ("np", "pil", "pt", "latent")
#: Windows per UNet call by default: two 16-frame windows (four UNet batch rows with guidance).
DEFAULT_WINDOW_BATCH = 2


@dataclass
class SVFRPipelineOutput(BaseOutput):
    """`frames`: `[T, H, W, 3]` float in [0, 1] ("np"), a list of PIL images ("pil"), `[T, 3, H, W]`
    in [0, 1] ("pt") or latents `[T, 4, h, w]` ("latent"); `reference_index`: the frame of the first
    pass used as reference (None when a reference was given or `self_refine` is off)."""

    frames: object
    reference_index: Optional[int] = None


def _windows(frames: torch.Tensor, starts: Sequence[int], window: int) -> torch.Tensor:
    """The windows `[G, window, ...]` of `frames` `[T, ...]` that begin at `starts`."""
    return torch.stack([frames[start: start + window] for start in starts])


def sharpest_frame(frames: torch.Tensor) -> int:
    """Index of the sharpest frame of `[T, 3, H, W]` (variance of the Laplacian of the luminance)."""
    grey = frames.float().mean(1, keepdim=True)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=grey.device)[None, None]
    response = torch.nn.functional.conv2d(grey, kernel)
    return int(response.flatten(1).var(1).argmax())


class SVFRPipeline(AccelerationMixin, DiffusionPipeline):
    r"""Video face restoration (BFR, colorization, inpainting, any combination).

    Args:
        vae ([`AutoencoderKLTemporalDecoder`]): SVD's VAE.
        unet ([`UNetSpatioTemporalConditionModel`]): SVFR's UNet (12 input channels).
        scheduler ([`EulerDiscreteScheduler`]): SVD's scheduler.
        id_projection ([`IDProjection`], optional): ArcFace features -> identity tokens.
    """

    model_cpu_offload_seq = "id_projection->unet->vae"
    _optional_components = ["id_projection"]
    _callback_tensor_inputs = ["latents"]

    def __init__(self, vae: AutoencoderKLTemporalDecoder, unet: UNetSpatioTemporalConditionModel,
                 scheduler: EulerDiscreteScheduler, id_projection: Optional[IDProjection] = None):
        super().__init__()
        if unet.config.in_channels != SVFR_IN_CHANNELS:
            raise IdgenError(f"SVFR's UNet reads {SVFR_IN_CHANNELS} channels (noisy + degraded + reference latents); "
                             f"this one reads {unet.config.in_channels}: widen it with widen_conv_in(unet).")
        check_task_conditioning(unet)
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler, id_projection=id_projection)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    # -- inputs ------------------------------------------------------------------------------
    def preprocess(self, video) -> torch.Tensor:
        """Frames `[T, 3, H, W]` in [-1, 1] from a tensor in [-1, 1], an array `[T, H, W, 3]` uint8,
        or a list of PIL images / `[H, W, 3]` uint8 arrays."""
        if isinstance(video, torch.Tensor):
            frames = video.float()
        else:
            items = [np.asarray(f) for f in video] if isinstance(video, (list, tuple)) else np.asarray(video)
            array = (np.stack(items) if items else np.zeros((0, 0, 0, 3), np.uint8)) if isinstance(items, list) else items
            if array.ndim != 4 or array.shape[-1] != 3:
                raise IdgenError(f"video frames must be [T, H, W, 3] RGB; got {tuple(array.shape)}.")
            frames = torch.from_numpy(array.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
        if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] == 0:
            raise IdgenError(f"video must be [T, 3, H, W] RGB with T >= 1; got {tuple(frames.shape)}.")
        f = self.vae_scale_factor
        if frames.shape[-1] % f or frames.shape[-2] % f:
            raise IdgenError(f"frame size {frames.shape[-1]}x{frames.shape[-2]} must be a multiple of {f}.")
        return frames

    def identity_tokens(self, identity_features, device, dtype) -> Optional[torch.Tensor]:
        """Tokens `[1, N, C]` from the ArcFace features of one face (`[512]` -> 1 token,
        `[512, 7, 7]` -> 49, with or without a leading batch of 1), or None. diffusers'
        spatio-temporal UNet gives every frame of a window the same context, as the official
        pipeline does by repeating the tokens per frame."""
        if identity_features is None:
            return None
        if self.id_projection is None:
            raise IdgenError("identity features need the `id_projection` component (SVFR's id_linear).")
        features = torch.as_tensor(np.asarray(identity_features, dtype=np.float32)
                                   if not isinstance(identity_features, torch.Tensor) else identity_features)
        features = features[None] if features.ndim in (1, 3) else features
        if features.shape[0] != 1:
            raise IdgenError(f"identity features are of one face; got a batch of {features.shape[0]}.")
        return self.id_projection(features.to(device)).to(dtype)

    def encode(self, frames: torch.Tensor, chunk: int, noise_aug_strength: float = 0.0,
               generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`(condition, start)` latents `[T, 4, h, w]` of frames `[T, 3, H, W]`, encoded `chunk`
        frames at a time: the condition is the unscaled mode of the frames plus
        `noise_aug_strength` Gaussian pixel noise (SVD's convention), the start the scaled mean of
        the clean frames (official)."""
        vae, original = self.vae, self.vae.dtype
        upcast = original in (torch.float16, torch.bfloat16) and vae.config.force_upcast
        if upcast:
            vae.to(dtype=torch.float32)
        conditions, starts = [], []
        for i in range(0, len(frames), chunk):
            pixels = frames[i: i + chunk].to(device=vae.device, dtype=vae.dtype)
            dist = vae.encode(pixels).latent_dist
            starts.append(dist.mean * vae.config.scaling_factor)
            if noise_aug_strength > 0:
                noise = randn_tensor(pixels.shape, generator=generator, device=pixels.device, dtype=pixels.dtype)
                dist = vae.encode(pixels + noise_aug_strength * noise).latent_dist
            conditions.append(dist.mode())
        if upcast:
            vae.to(dtype=original)
        return torch.cat(conditions), torch.cat(starts)

    # -- the sampler ---------------------------------------------------------------------------
    def denoise(self, lq_latents, start_latents, reference_latent, tokens, task, *, num_inference_steps, strength,
                min_guidance_scale, max_guidance_scale, window, overlap, window_batch, generator,
                callback_on_step_end=None, callback_on_step_end_tensor_inputs=("latents",)):
        """Windowed sampling of latents `[T, 4, h, w]` (see the module docstring); the windows of a
        step go through the UNet `window_batch` at a time (one batch, the same result as one by one)."""
        device, dtype = lq_latents.device, self.unet.dtype
        num_frames = lq_latents.shape[0]
        window = min(window, num_frames)
        overlap = min(overlap, window - 1)  # a clip shorter than the window is one window
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        skip = num_inference_steps - min(int(num_inference_steps * strength), num_inference_steps)
        timesteps = self.scheduler.timesteps[skip * self.scheduler.order:]
        if len(timesteps) == 0:
            raise IdgenError(f"strength {strength} leaves no denoising step; raise it or num_inference_steps.")
        noise = randn_tensor(start_latents.shape, generator=generator, device=device, dtype=start_latents.dtype)
        latents = self.scheduler.add_noise(start_latents, noise, timesteps[:1])
        guidance = torch.linspace(min_guidance_scale, max_guidance_scale, len(timesteps)).tolist()
        do_cfg = (reference_latent is not None or tokens is not None) and any(g != 1.0 for g in guidance)
        reference = (torch.zeros_like(lq_latents) if reference_latent is None
                     else reference_latent[None].expand_as(lq_latents))
        hidden = tokens if tokens is not None else torch.zeros(1, 1, self.unet.config.cross_attention_dim,
                                                              device=device, dtype=dtype)
        added = task.to(device=device, dtype=dtype)[None]
        if do_cfg:
            hidden, added = torch.cat([torch.zeros_like(hidden), hidden]), added.expand(2, -1)
        weights = torch.from_numpy(triangle_weights(window)).to(device)[:, None, None, None]
        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                blended = torch.zeros_like(latents, dtype=torch.float32)
                shift = window_shift(i, overlap)
                starts = window_starts(num_frames, window, overlap, shift)
                for group in (starts[k: k + window_batch] for k in range(0, len(starts), window_batch)):
                    # Every window takes the same step from t: re-derive the step index from t (as the
                    # official sampler does); diffusers' scheduler otherwise counts one step per call.
                    self.scheduler._step_index = None
                    x = _windows(latents, group, window)
                    model_in = self.scheduler.scale_model_input(x, t)
                    lq, ref = _windows(lq_latents, group, window), _windows(reference, group, window)
                    cond = torch.cat([model_in, lq, ref], dim=2).to(dtype)
                    if do_cfg:  # [negatives of the G windows, positives]: the layout of `hidden` and `added`
                        cond = torch.cat([torch.cat([model_in, lq, torch.zeros_like(ref)], dim=2).to(dtype), cond])
                    pred = self.unet(cond, t, encoder_hidden_states=hidden.repeat_interleave(len(group), dim=0),
                                     added_time_ids=added.repeat_interleave(len(group), dim=0), return_dict=False)[0]
                    if do_cfg:
                        pred_uncond, pred_cond = pred.chunk(2)
                        pred = pred_uncond + guidance[i] * (pred_cond - pred_uncond)
                    stepped = self.scheduler.step(pred.float(), t, x.float(), return_dict=False)[0]
                    for start, frames in zip(group, stepped):
                        blended[start: start + window] += frames * weights
                total = frame_weight_sums(num_frames, window, overlap, shift)
                latents = (blended / torch.from_numpy(total).to(device)[:, None, None, None]).to(latents.dtype)
                if callback_on_step_end is not None:
                    values = {"latents": latents}
                    out = callback_on_step_end(self, i, t, {k: values[k] for k in callback_on_step_end_tensor_inputs})
                    latents = (out or {}).get("latents", latents)
                bar.update()
        self.scheduler._step_index = None
        return latents

    def decode(self, latents: torch.Tensor, chunk: int) -> torch.Tensor:
        """Frames `[T, 3, H, W]` in [-1, 1], decoded `chunk` frames at a time (bounded memory)."""
        video = StableVideoDiffusionPipeline.decode_latents(self, latents[None], latents.shape[0], chunk)
        return video[0].permute(1, 0, 2, 3)

    @torch.no_grad()
    def __call__(
        self,
        video,
        *,
        tasks: Sequence[str] = ("bfr",),
        mask=None,
        reference=None,
        identity_features=None,
        identity_fn: Optional[Callable[[np.ndarray], Optional[np.ndarray]]] = None,
        num_inference_steps: int = 30,
        strength: float = 1.0,
        min_guidance_scale: float = 2.0,
        max_guidance_scale: float = 2.0,
        guidance_scale: Optional[float] = None,
        noise_aug_strength: float = 0.0,
        window: int = 16,
        overlap: int = 3,
        window_batch: int = DEFAULT_WINDOW_BATCH,
        decode_chunk_size: int = 8,
        self_refine: bool = True,
        generator: Optional[torch.Generator] = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Optional[Callable] = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ):
        r"""Restore a clip of aligned face crops. Defaults are the official `infer.yaml`'s.

        Args:
            video: `[T, 3, H, W]` in [-1, 1], `[T, H, W, 3]` uint8, or a list of frames (PIL or
                `[H, W, 3]` uint8); H and W multiples of the VAE factor (8; SVFR: 512).
            tasks: any combination of "bfr", "colorize", "inpaint" (the task code).
            mask: inpainting: `[H, W]` (white/1 = damaged), painted white into every frame as the
                official inference does.
            reference: a clean reference frame (`[3, H, W]` in [-1, 1], `[H, W, 3]` uint8 or PIL;
                resized to the frames); None with `self_refine` = take the sharpest frame of a
                first pass.
            identity_features: ArcFace features of the person (`[512]` -> one identity token,
                `[512, 7, 7]` -> 49, the official `id_linear`'s input). `identity_fn(reference
                [H, W, 3] uint8) -> features or None` computes them from the reference instead (e.g.
                from the sharpest first-pass frame).
            strength: 1 starts from the degraded latents noised to the largest σ; < 1 skips the
                first steps (img2img).
            min_guidance_scale / max_guidance_scale: CFG scale ramped linearly over the steps;
                `guidance_scale` sets both. The negative branch drops reference and identity.
            noise_aug_strength: pixel noise added to the degraded frames before encoding them as
                the condition (SVD's augmentation; official: 0).
            window / overlap: temporal window (frames; SVFR: 16) and overlap between windows.
            window_batch: windows denoised in one UNet call (a batch; the result does not depend
                on it, up to float rounding): fewer, larger calls for more memory (each window
                of 16 frames at 512 px is one SVD UNet batch, two with guidance). 1 = least memory.
            decode_chunk_size: frames per VAE encode/decode call (memory bound).
            self_refine: without `reference`, run the first pass that picks one.
            output_type: "np", "pil", "pt" or "latent" (see `SVFRPipelineOutput`).
            callback_on_step_end: `fn(pipe, step, timestep, {"latents": [T, 4, h, w]}) -> dict`
                after every step (all windows blended); a returned "latents" replaces them.
        """
        if output_type not in OUTPUT_TYPES:
            raise IdgenError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise IdgenError(f"callback_on_step_end_tensor_inputs can only hold {self._callback_tensor_inputs}; got {sorted(unknown)}.")
        if guidance_scale is not None:
            min_guidance_scale = max_guidance_scale = guidance_scale
        check_sampling_arguments(dict(num_inference_steps=num_inference_steps, strength=strength,
                                      min_guidance_scale=min_guidance_scale, max_guidance_scale=max_guidance_scale,
                                      noise_aug_strength=noise_aug_strength))
        frames = self.preprocess(video)
        task = task_vector(tasks)
        if mask is not None:
            if "inpaint" not in tasks:
                raise IdgenError("a mask is for the inpainting task: add 'inpaint' to tasks.")
            m = torch.as_tensor(np.asarray(mask, dtype=np.float32))
            m = (m / 255.0 if m.max() > 1 else m) > 0.5
            if tuple(m.shape) != tuple(frames.shape[-2:]):
                raise IdgenError(f"mask is {tuple(m.shape)}, frames are {tuple(frames.shape[-2:])}.")
            frames = frames.masked_fill(m[None, None], 1.0)
        device = self._execution_device
        lq_latents, start_latents = (x.to(device) for x in self.encode(frames, decode_chunk_size, noise_aug_strength,
                                                                        generator))
        sampling = dict(num_inference_steps=num_inference_steps, strength=strength, min_guidance_scale=min_guidance_scale,
                        max_guidance_scale=max_guidance_scale, window=window, overlap=overlap,
                        window_batch=check_integer("window_batch", window_batch, low=1), generator=generator)

        reference_index = None
        if reference is None and self_refine:
            first = min(window, len(frames))
            latents = self.denoise(lq_latents[:first], start_latents[:first], None, None, task, **sampling)
            restored = self.decode(latents, decode_chunk_size)
            reference_index = sharpest_frame(restored)
            reference = restored[reference_index]
        reference_latent = None
        if reference is not None:
            ref = self.preprocess(reference[None] if isinstance(reference, torch.Tensor) else [reference])
            if ref.shape[-2:] != frames.shape[-2:]:
                ref = torch.nn.functional.interpolate(ref, size=frames.shape[-2:], mode="bilinear", antialias=True)
            reference_latent = self.encode(ref, 1)[0][0].to(device)
            if identity_features is None and identity_fn is not None:
                pixels = ((ref[0].permute(1, 2, 0).float().cpu().numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
                identity_features = identity_fn(pixels)
        tokens = self.identity_tokens(identity_features, device, self.unet.dtype)
        latents = self.denoise(lq_latents, start_latents, reference_latent, tokens, task,
                               callback_on_step_end=callback_on_step_end,
                               callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, **sampling)
        if output_type == "latent":
            out = latents
        else:
            video_out = (self.decode(latents, decode_chunk_size).float() / 2 + 0.5).clamp(0, 1).cpu()
            if output_type == "pt":
                out = video_out
            else:
                out = video_out.permute(0, 2, 3, 1).numpy()
                if output_type == "pil":
                    from PIL import Image

                    out = [Image.fromarray((f * 255).round().astype(np.uint8)) for f in out]
        self.maybe_free_model_hooks()
        if not return_dict:
            return (out, reference_index)
        return SVFRPipelineOutput(frames=out, reference_index=reference_index)


def load_svfr_pipeline(svd_folder: os.PathLike, unet_file: os.PathLike, id_linear_file: os.PathLike, *,
                       torch_dtype: Optional[torch.dtype] = None) -> SVFRPipeline:
    """`SVFRPipeline` from an SVD folder (`stable-video-diffusion-img2vid-xt`: its `vae/`, `unet/`
    and `scheduler/`) and SVFR's released `unet.pth` / `id_linear.pth`, read with
    `weights_only=True` and checked key by key (a wrong file names its first bad key)."""
    folder = Path(svd_folder)
    unet = load_svfr_unet(UNetSpatioTemporalConditionModel.from_pretrained(folder / "unet", local_files_only=True),
                          unet_file)
    pipe = SVFRPipeline(vae=AutoencoderKLTemporalDecoder.from_pretrained(folder / "vae", local_files_only=True),
                        unet=unet, id_projection=load_id_projection(id_linear_file, SVFRConfig.for_unet(unet)),
                        scheduler=EulerDiscreteScheduler.from_pretrained(folder / "scheduler", local_files_only=True))
    return pipe.to(dtype=torch_dtype) if torch_dtype is not None else pipe
