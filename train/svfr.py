"""Training SVFR's video restoration UNet (`idgen train svfr`). The official SVFR released no
training code (SVFR #16); this follows the paper with SVD's fine-tuning recipe.

- Data: a folder of face videos (aligned face crops, e.g. made with `idgen.video_faces`); each
  example is `num_frames` consecutive frames resized to `resolution`.
- Pairs: the degradation kit degrades each clip for a task set drawn per example (BFR always, plus
  colorization and inpainting with probability `task_prob` each), seeded by the loop's per-step
  generator; the reference latent is a random clean frame of the clip, dropped with probability
  `reference_dropout` (so the first, reference-free pass of self-referred refinement is trained too).
- Loss: SVD's EDM objective (log-normal σ with mean 0.7 and std 1.6, c_skip/c_out/c_in
  preconditioning, weight (1 + σ²)/σ²) on the clean clip's latents.
- Unified latent regularisation (`ulr_weight` > 0, the paper's ULR): the same clip is also run with a
  different task set, and the UNet's mid-block features of the two runs are pulled together (MSE).
- Facial landmark prior (`landmark_weight` > 0): a small head regresses each clean frame's 68 dlib
  landmarks (normalised to [0, 1]) from the UNet's mid-block features, so the shared latent carries
  the face structure; frames where dlib finds no face are left out of that term. The head is a
  training aid (saved as `landmark_head.safetensors`, not used at inference).
- Identity tokens: training them needs ArcFace features of the reference; without an ArcFace model
  here the identity tokens are trained as zeros (the negative branch) and `id_projection/` keeps its
  initial weights.

Writes `unet/` (and `id_projection/`): `SVFRPipeline(vae, UNetSpatioTemporalConditionModel.from_pretrained(out / "unet"), ...)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from idgen.errors import DatasetError, IdgenError

from .loop import TrainingArgs, TrainingTask

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")


@dataclass
class SVFROptions:
    """What SVFR training needs beyond `TrainingArgs`."""

    base: str = field(metadata={"help": "SVD folder (stable-video-diffusion-img2vid-xt) or an SVFR folder, or tiny-svd"})
    data: str = field(metadata={"help": "a folder of face videos (aligned crops)"})
    num_frames: int = field(default=16, metadata={"help": "frames per training clip"})
    resolution: int = field(default=512, metadata={"help": "frame size in pixels"})
    preset: str = field(default="gfpgan", metadata={"help": "degradation preset"})
    task_prob: float = field(default=0.3, metadata={"help": "probability of adding colorization / inpainting to BFR"})
    reference_dropout: float = field(default=0.3, metadata={"help": "probability of training without the reference latent"})
    ulr_weight: float = field(default=0.0, metadata={"help": "weight of the unified latent regularisation (0: off)"})
    landmark_weight: float = field(default=0.0, metadata={"help": "weight of the facial landmark prior loss (0: off)"})


class ClipFolder(torch.utils.data.Dataset):
    """Consecutive `num_frames` frames of each video (one clip per `num_frames` frames), as
    `{"frames": [F, H, W, 3] uint8}` resized to `resolution` squares."""

    def __init__(self, root: Path, num_frames: int, resolution: int):
        from idgen.video import probe_video

        self.root, self.num_frames, self.resolution = Path(root), num_frames, resolution
        videos = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES) if self.root.is_dir() else []
        if not videos:
            raise DatasetError(f"{self.root}: no videos ({', '.join(VIDEO_SUFFIXES)}) found.")
        self.clips = [(v, s) for v in videos for s in range(0, probe_video(v).num_frames - num_frames + 1, num_frames)]
        if not self.clips:
            raise DatasetError(f"{self.root}: every video is shorter than {num_frames} frames.")

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        import cv2

        from idgen.video import read_frames

        video, start = self.clips[i]
        frames = [cv2.resize(f, (self.resolution,) * 2, interpolation=cv2.INTER_AREA)
                  for f in read_frames(video, start=start, max_frames=self.num_frames)]
        return {"frames": np.stack(frames)}


def _collate(items):
    return {"frames": np.stack([it["frames"] for it in items])}


class SVFRTask(TrainingTask):
    name = "svfr"

    def __init__(self, options: SVFROptions, args: TrainingArgs):
        self.opts, self.args = options, args

    def setup(self, accelerator, weight_dtype) -> None:
        from idgen.adapters.svfr import IDProjection, widen_conv_in

        o = self.opts
        self.data = ClipFolder(Path(o.data), o.num_frames, o.resolution)
        if o.base == "tiny-svd":
            from idgen.testing import tiny_svd_components

            parts = tiny_svd_components(0)
            self.vae, self.unet = parts["vae"], parts["unet"]
        else:
            from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

            base = Path(o.base)
            if not (base / "unet").is_dir():
                raise IdgenError(f"{base}: not an SVD/SVFR folder (no unet/).")
            self.vae = AutoencoderKLTemporalDecoder.from_pretrained(base / "vae", local_files_only=True)
            self.unet = UNetSpatioTemporalConditionModel.from_pretrained(base / "unet", local_files_only=True)
        widen_conv_in(self.unet)
        self.id_projection = IDProjection(512, self.unet.config.cross_attention_dim)
        self.landmark_head = None
        if o.landmark_weight > 0:
            from idgen.face import get_face_analyzer

            self.analyzer = get_face_analyzer("dlib")
            width = self.unet.config.block_out_channels[-1]
            self.landmark_head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                                     torch.nn.Linear(width, 136)).to(accelerator.device)
        self.vae.requires_grad_(False).to(accelerator.device)
        self.unet.requires_grad_(True).train().to(accelerator.device)
        if self.args.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

    def dataset(self):
        return self.data

    def collate(self, items):
        return _collate(items)

    def trainable_modules(self):
        return [self.unet] + ([self.landmark_head] if self.landmark_head is not None else [])

    def landmarks(self, clip: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets `[F, 136]` (68 dlib landmarks / resolution) and a `[F]` mask of frames with a face."""
        import cv2

        targets, found = [], []
        for frame in clip:
            scale = max(1.0, 256 / frame.shape[1])  # dlib's detector misses faces under ~80 px: look at >= 256 px
            faces = self.analyzer.detect(cv2.resize(frame, None, fx=scale, fy=scale) if scale > 1 else frame)
            points = faces[0].landmarks if faces and faces[0].landmarks is not None else None
            found.append(points is not None)
            targets.append(np.zeros(136, np.float32) if points is None else (points / (scale * frame.shape[1])).reshape(-1))
        return torch.from_numpy(np.stack(targets).astype(np.float32)), torch.tensor(found)

    def draw_tasks(self, generator: torch.Generator) -> tuple[str, ...]:
        extra = torch.rand(2, generator=generator) < self.opts.task_prob
        return ("bfr",) + tuple(t for t, on in zip(("colorize", "inpaint"), extra.tolist()) if on)

    def _latents(self, clip: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """`(mode, scaled mean)` latents `[F, 4, h, w]` of a clip `[F, H, W, 3]` uint8."""
        pixels = torch.from_numpy(clip.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).to(self.vae.device)
        dist = self.vae.encode(pixels).latent_dist
        return dist.mode(), dist.mean * self.vae.config.scaling_factor

    def clip_loss(self, clip: np.ndarray, generator: torch.Generator, unet, tasks=None):
        """EDM loss of one clip (and its mid-block features, for ULR)."""
        from idgen.adapters.svfr import task_vector
        from idgen.degrade import degrade

        tasks = tasks or self.draw_tasks(generator)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        lq = degrade(clip, self.opts.preset, seed=seed, tasks=tasks).image
        with torch.no_grad():
            lq_mode, _ = self._latents(lq)
            _, target = self._latents(clip)
            ref_index = int(torch.randint(0, len(clip), (1,), generator=generator))
            reference = self._latents(clip[ref_index: ref_index + 1])[0].expand_as(lq_mode)
        if float(torch.rand(1, generator=generator)) < self.opts.reference_dropout:
            reference = torch.zeros_like(reference)
        device = target.device
        sigma = torch.exp(0.7 + 1.6 * torch.randn(1, generator=generator)).to(device)
        noise = torch.randn(target.shape, generator=generator).to(device)
        noisy = target + noise * sigma
        c_in, c_skip, c_out = 1 / (sigma**2 + 1) ** 0.5, 1 / (sigma**2 + 1), -sigma / (sigma**2 + 1) ** 0.5
        model_in = torch.cat([noisy * c_in, lq_mode, reference], dim=1)[None]
        context = torch.zeros(1, 1, unet.config.cross_attention_dim, device=device)
        features = {}
        hook = unet.mid_block.register_forward_hook(lambda m, a, out: features.setdefault("mid", out))
        try:
            pred = unet(model_in, 0.25 * sigma.log(), encoder_hidden_states=context,
                        added_time_ids=task_vector(tasks).to(device)[None]).sample[0]
        finally:
            hook.remove()
        denoised = pred * c_out + c_skip * noisy
        loss = ((1 + sigma**2) / sigma**2 * (denoised - target) ** 2).mean()
        return loss, features["mid"], tasks

    def loss(self, batch, generator, modules):
        unet = modules[0]
        losses = []
        for clip in batch["frames"]:
            loss, mid, tasks = self.clip_loss(clip, generator, unet)
            if self.landmark_head is not None:
                targets, found = self.landmarks(clip)
                if found.any():
                    predicted = modules[1](mid.float())
                    term = torch.nn.functional.mse_loss(predicted[found.to(mid.device)], targets[found].to(mid.device))
                    loss = loss + self.opts.landmark_weight * term
            if self.opts.ulr_weight > 0:  # same clip, another task set: pull the latent features together
                other = ("bfr", "colorize") if "colorize" not in tasks else ("bfr",)
                state = generator.get_state()
                _, other_mid, _ = self.clip_loss(clip, generator, unet, tasks=other)
                generator.set_state(state)
                loss = loss + self.opts.ulr_weight * torch.nn.functional.mse_loss(mid, other_mid)
            losses.append(loss)
        return torch.stack(losses).mean()

    def save_weights(self, out_dir: Path) -> list[Path]:
        self.unet.save_pretrained(out_dir / "unet")
        self.id_projection.save_pretrained(out_dir / "id_projection")
        paths = [out_dir / "unet", out_dir / "id_projection"]
        if self.landmark_head is not None:
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu().contiguous() for k, v in self.landmark_head.state_dict().items()},
                      str(out_dir / "landmark_head.safetensors"))
            paths.append(out_dir / "landmark_head.safetensors")
        return paths
