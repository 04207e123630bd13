"""Training SVFR's video restoration UNet (`idgen train svfr`). The official SVFR released no
training code (SVFR #16); this follows the paper with SVD's fine-tuning recipe, on the shared loop
(`run_training`: accelerate, checkpoints with exact resume, EMA, ...).

- Data: a folder of face videos (aligned face crops, e.g. made with `idgen.media.video_faces`); each
  example is `num_frames` consecutive frames resized to `resolution`.
- Pairs: the degradation kit (`idgen.media.degrade`) degrades each clip for a task set drawn per example
  (BFR always, plus colorization and inpainting with probability `task_prob` each), seeded by the
  loop's per-step generator. The inpainting region is painted white, as the official inference
  paints the user's mask (`SVFRPipeline(mask=...)` does the same).
- Conditions: the degraded clip's latents; a random clean frame of the clip as the reference latent;
  with `identity_backend` "insightface", the ArcFace embedding of that frame through `IDProjection`
  (one identity token; `id_projection` is trained too). `reference_dropout` drops reference and
  identity together (the CFG negative branch and the reference-free first pass of self-referred
  refinement); `identity_dropout` drops the identity alone.
- Loss: SVD's EDM objective (log-normal σ with mean 0.7 and std 1.6, c_skip/c_out/c_in
  preconditioning, c_noise = ¼ ln σ, weight (1 + σ²)/σ²) on the clean clip's latents.
- Unified latent regularisation (`ulr_weight` > 0, the paper's ULR): every clip is also run with a
  second task set (BFR alone vs BFR with colorization and/or inpainting; the same blind degradation,
  noise, σ and conditions), both runs count in the EDM loss, and the UNet's mid-block features of
  the two runs are pulled together: a symmetric InfoNCE on their cosine similarities over the
  batch (the other clips are the negatives), `1 - cos` when the batch holds one clip.
- Facial landmark prior (`landmark_weight` > 0): a small head regresses each clean frame's 68 dlib
  landmarks (normalised to [0, 1]) from the mid-block features, so the shared latent carries the
  face structure; frames where dlib finds no face are left out of that term. A training aid (saved
  as `landmark_head.safetensors`, not used at inference).

Writes `unet/` and, when identity was trained or the base had one, `id_projection/`:
`SVFRPipeline(vae, UNetSpatioTemporalConditionModel.from_pretrained(out / "unet"), scheduler,
IDProjection.from_pretrained(out / "id_projection"))`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

import cv2
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from safetensors.torch import save_file

from idgen.errors import DatasetError, FaceNotFoundError, FaceTooSmallError, IdgenError

from idgen.train.loop import TrainingTask
from idgen.train.options import SVFROptions, TrainingArgs
from idgen.adapters.svfr import IDProjection, check_task_conditioning, task_vector, widen_conv_in
from idgen.face import get_face_analyzer
from idgen.media.degrade import apply_mask, degrade
from idgen.media.video import probe_video, read_frames
from idgen.testing import tiny_svd_components

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
#: Second task sets of the ULR run when the first is BFR alone.
MIXED_TASKS = (("bfr", "colorize"), ("bfr", "inpaint"), ("bfr", "colorize", "inpaint"))
ARCFACE_DIM = 512
ENCODE_CHUNK = 8  # frames per VAE call (memory bound)


class ClipFolder(torch.utils.data.Dataset):
    """Consecutive `num_frames` frames of each video (one clip per `num_frames` frames), as
    `{"frames": [F, H, W, 3] uint8, "index": int}` resized to `resolution` squares."""

    def __init__(self, root: Path, num_frames: int, resolution: int):
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
        video, start = self.clips[i]
        frames = [cv2.resize(f, (self.resolution,) * 2, interpolation=cv2.INTER_AREA)
                  for f in read_frames(video, start=start, max_frames=self.num_frames)]
        if len(frames) != self.num_frames:
            raise DatasetError(f"{video}: only {len(frames)} frames could be read from frame {start}.")
        return {"frames": np.stack(frames), "index": i}


def unified_latent_loss(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """ULR between features `[B, ...]` of the same B clips under two task sets: symmetric InfoNCE
    on cosine similarities / `temperature` (clip i's two runs are the positive pair, the other
    clips the negatives); `1 - cos` for a single clip, where there are no negatives."""
    a = torch.nn.functional.normalize(a.flatten(1).float(), dim=1)
    b = torch.nn.functional.normalize(b.flatten(1).float(), dim=1)
    if len(a) == 1:
        return 1 - (a * b).sum()
    logits = a @ b.T / temperature
    labels = torch.arange(len(a), device=a.device)
    return (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)) / 2


@dataclass
class Draw:
    """The random choices of one example (all from the loop's generator)."""

    tasks: tuple[str, ...]
    other_tasks: tuple[str, ...]
    seed: int
    reference: int
    drop_reference: bool
    drop_identity: bool


class SVFRTask(TrainingTask):
    name = "svfr"

    def __init__(self, options: SVFROptions, args: TrainingArgs):
        self.opts, self.args = options, args
        self._landmarks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._embeddings: dict[tuple[int, int], Optional[np.ndarray]] = {}

    # -- models --------------------------------------------------------------------------------
    def _load_base(self):
        """`(vae, unet, id_projection or None)` of the base."""

        o = self.opts
        if o.base == "tiny-svd":
            parts = tiny_svd_components(0)
            return parts["vae"], parts["unet"], None

        base = Path(o.base)
        if not (base / "unet").is_dir() or not (base / "vae").is_dir():
            raise IdgenError(f"{base}: not an SVD/SVFR folder (needs unet/ and vae/).")
        projection = (IDProjection.from_pretrained(base / "id_projection", local_files_only=True)
                      if (base / "id_projection").is_dir() else None)
        return (AutoencoderKLTemporalDecoder.from_pretrained(base / "vae", local_files_only=True),
                UNetSpatioTemporalConditionModel.from_pretrained(base / "unet", local_files_only=True), projection)

    def setup(self, accelerator, weight_dtype) -> None:
        o = self.opts
        if self.args.snr_gamma is not None or self.args.noise_offset:
            raise IdgenError("svfr trains with SVD's EDM weighting (1 + σ²)/σ² on continuous σ: "
                             "--snr-gamma and --noise-offset do not apply.")
        self.data = ClipFolder(Path(o.data), o.num_frames, o.resolution)
        self.vae, self.unet, projection = self._load_base()
        widen_conv_in(self.unet)
        check_task_conditioning(self.unet)
        self.trained_identity = o.identity_backend != "none"
        self.save_projection = self.trained_identity or projection is not None
        self.id_projection = projection or IDProjection(ARCFACE_DIM, self.unet.config.cross_attention_dim)
        if self.trained_identity:
            self.identity_analyzer = get_face_analyzer(o.identity_backend)
            dim = getattr(self.identity_analyzer, "embedding_dim", None)
            if dim not in (None, ARCFACE_DIM):
                raise IdgenError(f"SVFR's identity tokens take {ARCFACE_DIM}-d ArcFace embeddings; the "
                                 f"{o.identity_backend} backend gives {dim}-d ones.")
        self.landmark_head = None
        if o.landmark_weight > 0:
            self.landmark_analyzer = get_face_analyzer("dlib")
            width = self.unet.config.block_out_channels[-1]
            self.landmark_head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                                     torch.nn.Linear(width, 136)).to(accelerator.device)
        self.vae.requires_grad_(False).to(accelerator.device)  # fp32: SVD's VAE is `force_upcast`
        self.unet.requires_grad_(True).train().to(accelerator.device)
        self.id_projection.requires_grad_(self.trained_identity).to(accelerator.device)
        if self.args.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

    def dataset(self):
        return self.data

    def collate(self, items):
        return {"frames": np.stack([it["frames"] for it in items]), "index": [it["index"] for it in items]}

    def trainable_modules(self):
        return ([self.unet] + ([self.id_projection] if self.trained_identity else [])
                + ([self.landmark_head] if self.landmark_head is not None else []))

    # -- per-example inputs --------------------------------------------------------------------
    def draw(self, num_frames: int, generator: torch.Generator) -> Draw:
        """One example's choices; always the same number of draws, whatever the options."""
        extra = (torch.rand(2, generator=generator) < self.opts.task_prob).tolist()
        tasks = ("bfr",) + tuple(t for t, on in zip(("colorize", "inpaint"), extra) if on)
        mixed = MIXED_TASKS[int(torch.randint(0, len(MIXED_TASKS), (1,), generator=generator))]
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        reference = int(torch.randint(0, num_frames, (1,), generator=generator))
        u = torch.rand(2, generator=generator).tolist()
        return Draw(tasks=tasks, other_tasks=mixed if tasks == ("bfr",) else ("bfr",), seed=seed, reference=reference,
                    drop_reference=u[0] < self.opts.reference_dropout, drop_identity=u[1] < self.opts.identity_dropout)

    def degraded(self, clip: np.ndarray, tasks, seed: int) -> np.ndarray:
        """The model's input clip `[F, H, W, 3]` uint8: `degrade` for `tasks`, the inpainting region
        white (the official inference's convention)."""

        out = degrade(clip, self.opts.preset, seed=seed, tasks=tasks)
        if out.mask is None:
            return out.image
        return np.stack([apply_mask(frame, out.mask, fill=255) for frame in out.image])

    def landmarks(self, index: int, clip: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets `[F, 136]` (68 dlib landmarks / frame width) and a `[F]` mask of frames with a face;
        cached per clip (the clean frames never change)."""
        if index not in self._landmarks:
            targets, found = [], []
            for frame in clip:
                scale = max(1.0, 256 / frame.shape[1])  # dlib's detector misses faces under ~80 px
                faces = self.landmark_analyzer.detect(cv2.resize(frame, None, fx=scale, fy=scale) if scale > 1 else frame)
                points = faces[0].landmarks if faces and faces[0].landmarks is not None else None
                found.append(points is not None)
                targets.append(np.zeros(136, np.float32) if points is None
                               else (points / (scale * frame.shape[1])).reshape(-1))
            self._landmarks[index] = (torch.from_numpy(np.stack(targets).astype(np.float32)), torch.tensor(found))
        return self._landmarks[index]

    def identity_embedding(self, index: int, clip: np.ndarray, frame: int) -> Optional[np.ndarray]:
        """The ArcFace embedding `[512]` of one clean frame (None without a usable face); cached."""
        key = (index, frame)
        if key not in self._embeddings:
            try:
                face = self.identity_analyzer.get(clip[frame])
                self._embeddings[key] = None if face.embedding is None else np.asarray(face.embedding, np.float32)
            except (FaceNotFoundError, FaceTooSmallError):
                self._embeddings[key] = None
        return self._embeddings[key]

    def _encode(self, clips: np.ndarray, *, start: bool = False) -> torch.Tensor:
        """Latents `[N, F, 4, h, w]` of clips `[N, F, H, W, 3]` uint8, `ENCODE_CHUNK` frames per VAE
        call: the unscaled mode (the UNet's conditions) or, with `start`, the scaled mean (the
        denoising target), as the pipeline encodes them."""
        frames = clips.reshape(-1, *clips.shape[2:])
        latents = []
        for i in range(0, len(frames), ENCODE_CHUNK):
            pixels = torch.from_numpy(frames[i: i + ENCODE_CHUNK].astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
            dist = self.vae.encode(pixels.to(self.vae.device)).latent_dist
            latents.append(dist.mean * self.vae.config.scaling_factor if start else dist.mode())
        return torch.cat(latents).unflatten(0, clips.shape[:2])

    # -- the loss ------------------------------------------------------------------------------
    def loss(self, batch, generator, modules):
        o = self.opts
        unet, device = modules[0], self.unet.device
        clips, indices = batch["frames"], batch["index"]
        batch_size, num_frames = clips.shape[:2]
        draws = [self.draw(num_frames, generator) for _ in range(batch_size)]
        runs = [[self.degraded(c, d.tasks, d.seed) for c, d in zip(clips, draws)]]
        if o.ulr_weight > 0:  # the same blind degradation (same seed), other tasks
            runs.append([self.degraded(c, d.other_tasks, d.seed) for c, d in zip(clips, draws)])
        with torch.no_grad():
            target = self._encode(clips, start=True)
            conditions = [self._encode(np.stack(run)) for run in runs]
            references = self._encode(np.stack([c[d.reference][None] for c, d in zip(clips, draws)]))
            keep_reference = torch.tensor([not d.drop_reference for d in draws], device=device, dtype=references.dtype)
            references = (references * keep_reference[:, None, None, None, None]).expand_as(target)
        sigma = torch.exp(0.7 + 1.6 * torch.randn(batch_size, generator=generator)).to(device)[:, None, None, None, None]
        noise = torch.randn(target.shape, generator=generator).to(device)
        noisy = target + noise * sigma
        c_in, c_skip, c_out = 1 / (sigma**2 + 1) ** 0.5, 1 / (sigma**2 + 1), -sigma / (sigma**2 + 1) ** 0.5
        tokens = self._tokens(modules, clips, indices, draws)
        n = len(runs)
        model_in = torch.cat([torch.cat([noisy * c_in, cond, references], dim=2) for cond in conditions])
        added = torch.stack([task_vector(d.tasks if r == 0 else d.other_tasks) for r in range(n) for d in draws]).to(device)
        features = {}
        hook = self.unet.mid_block.register_forward_hook(lambda m, a, out: features.setdefault("mid", out))
        try:
            pred = unet(model_in, (0.25 * sigma.log()).flatten().repeat(n), encoder_hidden_states=tokens.repeat(n, 1, 1),
                        added_time_ids=added).sample
        finally:
            hook.remove()
        denoised = pred * c_out.repeat(n, 1, 1, 1, 1) + (c_skip * noisy).repeat(n, 1, 1, 1, 1)
        weight = ((1 + sigma**2) / sigma**2).repeat(n, 1, 1, 1, 1)
        loss = (weight * (denoised - target.repeat(n, 1, 1, 1, 1)) ** 2).mean()
        mid = features["mid"].unflatten(0, (n * batch_size, num_frames))
        if o.ulr_weight > 0:
            loss = loss + o.ulr_weight * unified_latent_loss(mid[:batch_size], mid[batch_size:], o.ulr_temperature)
        if self.landmark_head is not None:
            loss = loss + o.landmark_weight * self._landmark_loss(modules[-1], mid[:batch_size], clips, indices)
        return loss

    def _tokens(self, modules, clips, indices, draws) -> torch.Tensor:
        """Identity tokens `[B, 1, C]`: the projected ArcFace embedding of each reference frame,
        zeros where dropped, missing, or without identity training."""
        width, device = self.unet.config.cross_attention_dim, self.unet.device
        if not self.trained_identity:
            return torch.zeros(len(draws), 1, width, device=device)
        embeddings, keep = [], []
        for clip, index, d in zip(clips, indices, draws):
            emb = self.identity_embedding(index, clip, d.reference)
            keep.append(emb is not None and not d.drop_reference and not d.drop_identity)
            embeddings.append(emb if emb is not None else np.zeros(ARCFACE_DIM, np.float32))
        tokens = modules[1](torch.from_numpy(np.stack(embeddings)).to(device))
        return tokens * torch.tensor(keep, device=device, dtype=tokens.dtype)[:, None, None]

    def _landmark_loss(self, head, mid: torch.Tensor, clips, indices) -> torch.Tensor:
        """MSE of the landmarks predicted from mid-block features `[B, F, C, h, w]` on frames with a face."""
        targets, found = zip(*(self.landmarks(i, c) for i, c in zip(indices, clips)))
        targets, found = torch.cat(targets).to(mid.device), torch.cat(found).to(mid.device)
        if not found.any():
            return mid.sum() * 0.0
        predicted = head(mid.flatten(0, 1).float())
        return torch.nn.functional.mse_loss(predicted[found], targets[found])

    def save_weights(self, out_dir: Path) -> list[Path]:
        self.unet.save_pretrained(out_dir / "unet")
        paths = [out_dir / "unet"]
        if self.save_projection:
            self.id_projection.save_pretrained(out_dir / "id_projection")
            paths.append(out_dir / "id_projection")
        if self.landmark_head is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.landmark_head.state_dict().items()},
                      str(out_dir / "landmark_head.safetensors"))
            paths.append(out_dir / "landmark_head.safetensors")
        return paths
