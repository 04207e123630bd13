"""`idgen restore` (photos and videos) and `idgen eval restore` (degrade clean faces, restore,
measure). Weights follow the CLI's rule: configured ones, else the tiny embedded default."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from idgen import arguments
from idgen.app.enhance_options import add_enhance_arguments, crop_enhancer, enhance_arguments, enhance_photos
from idgen.app.options import RunOptions
from idgen.app.records import finite_mean, json_bytes, write_json
from idgen.app.speed_options import accelerate, add_speed_arguments, sampling_defaults, speed_arguments
from idgen.errors import IdgenError
from idgen.jobs import CancelToken
from idgen.media import VIDEO_STEPS
from idgen.media.degrade import PRESETS, TASKS, degrade
from idgen.models.methods import ENHANCE_RESTORERS, RESTORE_REFERENCE_WEIGHTS, RESTORE_WEIGHTS
from idgen.validation import InvalidArgumentError, check_integer, check_number

if TYPE_CHECKING:
    from idgen.media.video_faces import Progress


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
def restore_video(pipe, input_path, output_path, *, analyzer=None, tasks=("bfr",), reference=None,
                  embedded: bool = False, batch_frames: int = 64, seed: int = 0, progress: Progress = True,
                  provenance=None, enhance_crops=None, **sampling):
    """Restore every tracked face of a video with an `SVFRPipeline`; returns the `VideoReport`.

    Faces are tracked, aligned to the pipeline's size (any frame size and aspect ratio), restored
    per track `batch_frames` frames at a time (overlapping windows inside a batch), pasted back with
    a feathered seam; frames without a face pass through; the audio is kept. Each track's reference
    (`reference`, a clean photo of the person, else self-referred refinement on its first batch)
    is reused for its later batches, so the identity stays the same across batches; its identity
    features (the face's embedding, see `identity_embeddings`) go to SVFR's `id_linear`.
    `embedded`: the pipeline is the tiny embedded default (a 128-d embedding may stand in).
    `provenance`: an `idgen.provenance.Provenance` stamped into every frame and the file.
    `progress`: per frame, as each batch is written (`idgen.media.video_faces.Progress`).
    `enhance_crops`: a face post-pass (`FaceEnhancer.enhance_crops`) run on each batch of restored
    crops before they are pasted back (frame by frame: SVFR's temporal smoothing is not applied to it).
    `sampling`: `SVFRPipeline` arguments (`num_inference_steps`, `window_batch`: the windows of a
    track's batch denoised in one UNet call, ...).
    """
    # lazy (in the functions below too): torch, diffusers, OpenCV; keeps `idgen --help` under 1.5 s
    import torch

    from idgen.app.references import identity_embeddings
    from idgen.face import align_face, get_face_analyzer
    from idgen.identity import analyze_photo
    from idgen.media.video_faces import process_video

    analyzer = analyzer or get_face_analyzer()
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    references: dict[int, np.ndarray] = {}
    identities: dict[int, Optional[np.ndarray]] = {}
    given = None
    if reference is not None:
        photo, face = analyze_photo(reference, analyzer)
        given = align_face(photo, face.kps, size=size, mode="ffhq").image

    def features(faces) -> Optional[np.ndarray]:
        if pipe.id_projection is None or not faces:
            return None
        return identity_embeddings([max(faces, key=lambda f: f.width)], analyzer, embedded)[0][0]

    def process_crops(jobs):
        out = [None] * len(jobs)
        for track in sorted({j.track.track_id for j in jobs}):
            index = [i for i, j in enumerate(jobs) if j.track.track_id == track]
            clip = np.stack([jobs[i].crop for i in index])
            detected = [jobs[i].face for i in index if jobs[i].face is not None and jobs[i].face.embedding is not None]

            def identity_of(reference_crop: np.ndarray) -> Optional[np.ndarray]:
                """`[512]` features of the face in the reference crop, else of the track's own
                detection in the (degraded) frames; None without any face. Found on the track's
                first batch and kept, like its reference, so later batches neither detect again
                nor drift to another batch's detection."""
                if track not in identities:
                    found = features(analyzer.detect(reference_crop))
                    identities[track] = found if found is not None else features(detected)
                return identities[track]

            result = pipe(clip, tasks=tasks, reference=references.get(track, given), identity_fn=identity_of,
                          output_type="np", generator=torch.Generator().manual_seed(seed + track), **sampling)
            frames = (result.frames * 255).round().astype(np.uint8)
            if track not in references:
                references[track] = given if given is not None else frames[result.reference_index or 0]
            for i, frame in zip(index, frames):
                out[i] = frame
        return out if enhance_crops is None else enhance_crops(out)

    return process_video(input_path, output_path, process_crops, analyzer=analyzer, crop_size=size,
                         batch_size=batch_frames, progress=progress, provenance=provenance)


@dataclass
class RestoreRequest(RunOptions):
    """One restoration, as `idgen restore` and the demo's Restore tab run it.

    `reference`: a clean photo of the person (photos: through IP-Adapter-FaceID; videos: SVFR's
    reference frame and identity). `fidelity` (photos): 1 = follow the input, 0 = re-draw details.
    `tasks` (videos): "bfr", "colorize", "inpaint". `batch_size` (videos): temporal windows (16
    frames of one face) per denoising call, default `SVFRPipeline`'s (2); the result does not
    depend on it. And `RunOptions`.
    """

    input: str
    reference: Optional[str] = None
    fidelity: float = 0.5
    tasks: tuple[str, ...] = ("bfr",)
    batch_size: Optional[int] = None

    def __post_init__(self):
        super().__post_init__()
        self.fidelity = check_number("fidelity", self.fidelity, low=0.0, high=1.0)
        if self.batch_size is not None:
            self.batch_size = check_integer("batch_size", self.batch_size, low=1)
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown or not self.tasks:
            raise InvalidArgumentError(f"tasks must be one or more of {', '.join(TASKS)}, got "
                                       f"{','.join(self.tasks) or 'none'}.")

    @property
    def kind(self) -> str:
        return "video" if Path(self.input).suffix.lower() in VIDEO_SUFFIXES else "image"


def run_restore(request: RestoreRequest, out_dir, *, pipeline=None, progress: Progress = True,
                overwrite: bool = False, cancel: Optional[CancelToken] = None) -> dict:
    """Restore `request.input` and write `<stem>-restored.png|mp4` and `record.json` to `out_dir`;
    returns the record. `pipeline`: a built `(pipeline, is_embedded_default)` to reuse.
    `overwrite`: replace earlier results of the same names (else an `OutputError` before the run).
    `progress`: a video's per-frame progress (`idgen.media.video_faces.Progress`). `cancel`: checked
    at every denoising step (a cancelled job raises `idgen.jobs.JobCancelled` and writes nothing)."""
    import torch

    from idgen.app.references import identity_embeddings
    from idgen.app.stamping import job_provenance
    from idgen.face import get_face_analyzer
    from idgen.identity import analyze_photo
    from idgen.media.video_faces import require_processed_faces
    from idgen.models.recipes import build_restore_pipeline
    from idgen.outputs import OutputFolder
    from idgen.testing import EMBEDDED_DEFAULT_NOTE

    kind = request.kind
    if kind == "image" and tuple(request.tasks) != ("bfr",):
        raise IdgenError("photos are restored with --tasks bfr (colorization/inpainting are the video model's).")
    target = Path(request.input)
    name = f"{target.stem}-restored.{'mp4' if kind == 'video' else 'png'}"
    folder = OutputFolder(out_dir, overwrite=overwrite, hint="pass --overwrite")
    folder.claim(name, "record.json")
    pipe, embedded = pipeline or build_restore_pipeline(kind, reference=bool(request.reference),
                                                        embedded_default=request.embedded_default,
                                                        offload=request.memory != "max")
    pipe.set_progress_bar_config(disable=True)
    speed = accelerate(pipe, request)
    analyzer = get_face_analyzer(request.face_backend)
    sampling = sampling_defaults(pipe, request.steps, None, embedded,
                                 default_steps=VIDEO_STEPS if kind == "video" else None)
    steps = sampling.pop("num_inference_steps")
    hooks = {} if cancel is None else {"callback_on_step_end": cancel.on_step_end}
    hooks.update(sampling)  # a few-step preset's CFG (and eta)
    parameters = {"num_inference_steps": steps, "seed": request.seed, **sampling,
                  **({"fidelity": request.fidelity} if kind == "image" else {"tasks": list(request.tasks)})}
    weights = RESTORE_WEIGHTS[kind] + (RESTORE_REFERENCE_WEIGHTS if kind == "image" and request.reference else ())
    provenance = job_provenance("restore", "svfr" if kind == "video" else "restore-controlnet", weights,
                                embedded=embedded, parameters={**parameters, "pipeline": type(pipe).__name__})
    started = time.perf_counter()
    notes = []
    with folder:
        if kind == "video":
            batching = {} if request.batch_size is None else {"window_batch": request.batch_size}
            enhance_crops, enhance = crop_enhancer(request)
            with folder.writing(name) as output:
                report = restore_video(pipe, target, output, analyzer=analyzer, tasks=tuple(request.tasks),
                                       reference=request.reference, embedded=embedded, seed=request.seed,
                                       progress=progress, num_inference_steps=steps, provenance=provenance,
                                       enhance_crops=enhance_crops, **batching, **hooks)
            require_processed_faces(report, target)
            details = {"video": vars(report), "enhance": enhance}
            notes += report.notes
        else:
            identity = {}
            if request.reference:
                face = analyze_photo(request.reference, analyzer)[1]
                embeds, note = identity_embeddings([face], analyzer, embedded)
                identity = {"face_embeds": embeds}
                notes += [note] if note else []
            result = pipe.restore_faces(target, analyzer=analyzer, fidelity=request.fidelity, num_inference_steps=steps,
                                        generator=torch.Generator().manual_seed(request.seed), **identity, **hooks)
            (image,), enhance = enhance_photos(request, [np.asarray(result.image)], analyzer)
            folder.write_image(name, image, provenance)
            details = {"faces": result.faces, "enhance": enhance}
            notes += [f["note"] for f in result.faces if f["note"]]
        record = {"request": request, "kind": kind, "embedded_default": embedded,
                  "note": EMBEDDED_DEFAULT_NOTE if embedded else None, "pipeline": type(pipe).__name__,
                  "face_backend": analyzer.name, "parameters": parameters, "output": str(folder.path / name),
                  "seconds": round(time.perf_counter() - started, 3), **details, "notes": notes,
                  "provenance": provenance.to_dict() if provenance is not None else None, "speed": speed}
        folder.write_bytes("record.json", json_bytes(record))
    return record


# --------------------------------------------------------------------------------------------- eval
def _grid(rows: list[tuple[np.ndarray, ...]], size: int = 160) -> np.ndarray:
    """Side-by-side rows clean | degraded | each restoration, each `size` px."""
    import cv2

    return np.concatenate([np.concatenate([cv2.resize(x, (size, size)) for x in row], axis=1) for row in rows], axis=0)


#: What `idgen eval restore` compares: idgen's diffusion restoration and the official restorers.
EVAL_RESTORERS = ("diffusion", *ENHANCE_RESTORERS)
METRICS = ("psnr", "ssim", "identity_similarity", "landmark_distance")


def _official_restorations(names, degraded: np.ndarray, size: int, embedded_default: Optional[bool]) -> dict:
    """`{name: (restored [N, size, size, 3] uint8, is_embedded_default)}`: each official restorer on
    the degraded aligned faces (resized to its crop and back; no paste: the faces are the crops)."""
    import cv2

    from idgen.models.enhancers import build_face_enhancer

    out = {}
    for name in names:
        enhancer, embedded, _ = build_face_enhancer(name, embedded_default=embedded_default)
        crops = [cv2.resize(d, (enhancer.size,) * 2, interpolation=cv2.INTER_CUBIC) for d in degraded]
        restored = [cv2.resize(r, (size, size), interpolation=cv2.INTER_AREA) for r in enhancer.restore_crops(crops)]
        out[name] = (np.stack(restored), embedded)
    return out


def evaluate_restoration(input_path, out_dir, *, preset: str = "gfpgan", tasks=("bfr",), seed: int = 0,
                         max_items: int = 20, pipeline=None, embedded_default: Optional[bool] = None,
                         num_inference_steps: Optional[int] = None, face_backend: str = "dlib",
                         restorers=EVAL_RESTORERS) -> dict:
    """Degrade clean faces with `preset`, restore them with each of `restorers` ("diffusion":
    idgen's restoration pipeline, SVFR for a video; "codeformer", "gfpgan", "restoreformer": the
    official models, frame by frame), and report PSNR, SSIM, identity similarity and landmark
    distance (dlib: a face model independent of the restorers), plus the flow-warping temporal
    error for a video. Writes `metrics.json` and `grid.png` (clean | degraded | each restorer) to
    `out_dir`. `summary` / `items` hold the first restorer's metrics, `restorers` every one's."""
    import cv2
    import torch
    from PIL import Image

    from idgen.face import get_face_analyzer
    from idgen.image_io import list_photos, load_image
    from idgen.media.metrics import identity_similarity, landmark_distance, psnr, ssim, temporal_consistency
    from idgen.media.video import read_frames
    from idgen.models.recipes import build_restore_pipeline

    restorers = tuple(restorers)
    unknown = sorted(set(restorers) - set(EVAL_RESTORERS))
    if unknown or not restorers:
        raise InvalidArgumentError(f"restorers must be one or more of {', '.join(EVAL_RESTORERS)}, got "
                                   f"{','.join(restorers) or 'none'}.")
    source = Path(input_path)
    is_video = source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES
    kind = "video" if is_video else "image"
    pipe, embedded = pipeline or build_restore_pipeline(kind, embedded_default=embedded_default)
    pipe.set_progress_bar_config(disable=True)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    analyzer = get_face_analyzer(face_backend)
    steps = {"num_inference_steps": num_inference_steps} if num_inference_steps else {}

    def prepare(frame):
        return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)

    outputs = {}
    if is_video:
        clean = np.stack([prepare(f) for f in read_frames(source, max_frames=max_items)])
        degraded = degrade(clean, preset, seed=seed, tasks=tasks).image
        if "diffusion" in restorers:
            restored = pipe(degraded, tasks=tasks, output_type="np", generator=torch.Generator().manual_seed(seed),
                            **steps).frames
            outputs["diffusion"] = ((restored * 255).round().astype(np.uint8), embedded)
        names = [f"frame {i}" for i in range(len(clean))]
    else:
        files = list_photos(source)[:max_items] if source.is_dir() else [source]
        if not files:
            raise IdgenError(f"{source}: no photos to evaluate on.")
        clean = np.stack([prepare(load_image(f)) for f in files])
        degraded = np.stack([degrade(c, preset, seed=seed + i, tasks=tasks).image for i, c in enumerate(clean)])
        if "diffusion" in restorers:
            out = pipe(image=[Image.fromarray(d) for d in degraded], height=size, width=size, output_type="np",
                       generator=torch.Generator().manual_seed(seed), **steps).images
            outputs["diffusion"] = ((np.asarray(out) * 255).round().astype(np.uint8), embedded)
        names = [f.name for f in files]
    outputs.update(_official_restorations([r for r in restorers if r != "diffusion"], degraded, size, embedded_default))

    def metrics(restored) -> tuple[list[dict], dict]:
        items = [{"name": name, "psnr_degraded": psnr(c, d), "psnr": psnr(c, r), "ssim": ssim(c, r),
                  "identity_similarity": identity_similarity(c, r, analyzer),
                  "landmark_distance": landmark_distance(c, r, analyzer)}
                 for name, c, d, r in zip(names, clean, degraded, restored)]
        summary = {key: finite_mean([p[key] for p in items]) for key in ("psnr_degraded", *METRICS)}
        if is_video:
            summary["temporal_error"] = temporal_consistency(restored, reference=clean)
            summary["temporal_error_clean"] = temporal_consistency(clean)
        return items, summary

    results = {}
    for name in restorers:
        items, summary = metrics(outputs[name][0])
        results[name] = {"embedded_default": outputs[name][1], "summary": summary, "items": items}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = list(zip(clean, degraded, *(outputs[name][0] for name in restorers)))[:8]
    Image.fromarray(_grid(rows)).save(out_dir / "grid.png")
    first = results[restorers[0]]
    report = {"input": str(source), "kind": kind, "preset": preset, "tasks": list(tasks), "seed": seed,
              "embedded_default": embedded, "pipeline": type(pipe).__name__, "size": size,
              "summary": first["summary"], "items": first["items"], "restorers": results,
              "comparison": {name: {key: r["summary"][key] for key in METRICS} for name, r in results.items()},
              "grid": str(out_dir / "grid.png"), "grid_columns": ["clean", "degraded", *restorers],
              "note": "identity similarity and landmark distance use dlib's 128-d model and 68 landmarks; NaN/None "
                      "where no face was found (tiny random models produce noise, so expect None there)"}
    write_json(out_dir / "metrics.json", report)
    return report


# --------------------------------------------------------------------------------------------- CLI
def _cmd_restore(args: argparse.Namespace) -> int:
    request = RestoreRequest(input=args.input, reference=args.reference, fidelity=args.fidelity,
                             tasks=tuple(args.tasks.split(",")), steps=args.steps, batch_size=args.batch_size,
                             seed=args.seed,
                             face_backend=args.backend, embedded_default=True if args.tiny else None,
                             **speed_arguments(args), **enhance_arguments(args))
    record = run_restore(request, Path(args.out), overwrite=args.overwrite)
    print(record["output"])
    for note in [record["note"], *record["notes"]]:
        if note:
            print(f"note: {note}")
    return 0


def _cmd_eval_restore(args: argparse.Namespace) -> int:
    report = evaluate_restoration(args.input, args.out, preset=args.preset, tasks=tuple(args.tasks.split(",")),
                                  seed=args.seed, max_items=args.max_items, num_inference_steps=args.steps,
                                  embedded_default=True if args.tiny else None,
                                  restorers=tuple(args.restorers.split(",")))
    print(json.dumps(report["comparison"], indent=2))
    print(f"metrics: {Path(args.out) / 'metrics.json'}  grid: {report['grid']}")
    return 0


def add_parsers(sub) -> None:
    """Register `idgen restore` and `idgen eval restore`."""

    restore = sub.add_parser("restore", help="restore the faces of a damaged photo or video")
    restore.add_argument("input", help="photo or video")
    restore.add_argument("--reference", metavar="PHOTO",
                         help="a clean photo of the person (photos: needs IP-Adapter-FaceID weights; videos: SVFR's reference)")
    restore.add_argument("--fidelity", type=arguments.fraction, default=0.5, help="photos: 1 = follow the input, 0 = re-draw details")
    restore.add_argument("--tasks", default="bfr", help="videos: comma-separated bfr,colorize,inpaint")
    restore.add_argument("--steps", type=arguments.steps, default=None,
                         help=f"denoising steps (default: the pipeline's for photos, {VIDEO_STEPS} for videos)")
    restore.add_argument("--batch-size", type=arguments.integer(1), default=None,
                         help="videos: 16-frame windows per denoising call (default 2; 1 = least memory); more is "
                              "faster and takes more memory, the result is the same")
    restore.add_argument("--seed", type=arguments.seed, default=0)
    restore.add_argument("--out", default="outputs", metavar="DIR")
    restore.add_argument("--overwrite", action="store_true", help="replace earlier results of the same names in --out")
    restore.add_argument("--backend", choices=["dlib", "insightface"], default=None, help="face backend")
    restore.add_argument("--tiny", action="store_true", help="force the tiny embedded default (random weights)")
    add_speed_arguments(restore)
    add_enhance_arguments(restore)
    restore.set_defaults(func=_cmd_restore)

    evaluate = sub.add_parser("eval", help="evaluate a capability on your data")
    kinds = evaluate.add_subparsers(dest="what", required=True)
    er = kinds.add_parser("restore", help="degrade clean faces, restore them, report PSNR/SSIM/identity/landmarks/temporal")
    er.add_argument("--input", required=True, metavar="DIR|VIDEO", help="clean aligned faces: a folder of photos or a video")
    er.add_argument("--preset", default="gfpgan", choices=list(PRESETS))
    er.add_argument("--tasks", default="bfr", help="comma-separated bfr,colorize,inpaint")
    er.add_argument("--out", default="outputs/eval-restore", metavar="DIR")
    er.add_argument("--seed", type=arguments.seed, default=0)
    er.add_argument("--max-items", type=arguments.integer(1, 10000), default=20, help="photos (or video frames) to evaluate")
    er.add_argument("--steps", type=arguments.steps, default=None)
    er.add_argument("--restorers", default=",".join(EVAL_RESTORERS),
                    help=f"comma-separated, compared on the same degraded faces: {','.join(EVAL_RESTORERS)} (default all; "
                         "diffusion = idgen's restoration pipeline, the others the official models)")
    er.add_argument("--tiny", action="store_true", help="force the tiny embedded default (random weights)")
    er.set_defaults(func=_cmd_eval_restore)
    from idgen.app.eval_generate import add_eval_generate_parser
    add_eval_generate_parser(kinds)
