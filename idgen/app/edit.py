"""`idgen inpaint` and `idgen swap`: identity inpainting and face swap on photos and videos.

Same conventions as `idgen generate`: configured weights when present (see `idgen doctor`), the
tiny embedded default when none are configured, images/videos plus `record.json` in `--out`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np


from idgen import arguments
from idgen.errors import IdgenError
from idgen.app.enhance_options import add_enhance_arguments, enhance_arguments
from idgen.app.options import PromptOptions
from idgen.app.records import json_bytes
from idgen.app.speed_options import accelerate, add_speed_arguments, sampling_defaults, speed_arguments
from idgen.jobs import CancelToken
from idgen.media import VIDEO_STEPS
from idgen.models.methods import EDIT_ADAPTER, EDIT_METHODS, EDIT_WEIGHTS
from idgen.validation import InvalidArgumentError, check_integer, check_number, names_list


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
#: The landmark-hull mask regions; any other `region` is face-parsing classes ("skin,nose,mouth").
GEOMETRIC_REGIONS = ("face", "face_hair")
#: The largest mask growth / seam feather, in crop pixels (the crop is 512 px at most).
MAX_MASK_PIXELS = 256


@dataclass
class EditRequest(PromptOptions):
    """One `idgen inpaint` / `idgen swap` run (and `PromptOptions`). `sources`: one list of photos
    per source person. `batch_size`: most face crops per diffusion call (video frames, faces of a
    photo; default `FaceSwapper`'s, from the crop size); the result does not depend on it."""

    target: str
    sources: list[list[str]]
    method: str = "pva"
    mapping: str = "all"
    references: list[str] = field(default_factory=list)
    region: str = "face"
    keep: tuple[str, ...] = ()
    occlusion: bool = True
    mask: Optional[str] = None
    exclude: Optional[str] = None
    targets: Optional[list[int]] = None
    dilate: int = 8
    feather: int = 8
    strength: float = 1.0
    color_match: bool = True
    batch_size: Optional[int] = None
    operation: str = "swap"  # "inpaint" or "swap": what the outputs' provenance calls the job

    def __post_init__(self):
        super().__post_init__()
        self.dilate = check_integer("dilate", self.dilate, low=0, high=MAX_MASK_PIXELS)
        self.feather = check_integer("feather", self.feather, low=0, high=MAX_MASK_PIXELS)
        # diffusers' img2img runs int(steps * strength) steps: 0 would denoise nothing
        self.strength = check_number("strength", self.strength, low=0.0, high=1.0, low_open=True)
        if self.targets is not None:
            self.targets = [check_integer("targets", t, low=0) for t in self.targets]
        if self.batch_size is not None:
            self.batch_size = check_integer("batch_size", self.batch_size, low=1)
        self.keep = names_list(self.keep)
        if self.region not in GEOMETRIC_REGIONS or self.keep:
            from idgen.face.parsing import label_ids  # torch: only for a parsed region

            label_ids(self.keep)
            if self.region not in GEOMETRIC_REGIONS:
                label_ids(names_list(self.region))
        if self.operation not in ("inpaint", "swap"):
            raise InvalidArgumentError(f"operation must be 'inpaint' or 'swap', got {self.operation!r}.")


def _source_embeddings(request: EditRequest, analyzer, embedded: bool) -> tuple[list[np.ndarray], list[str]]:
    from idgen.app.references import faces_of_photos, identity_embeddings

    embeds, notes = [], []
    for photos in request.sources:
        _, faces, skipped = faces_of_photos(photos, analyzer)
        person, note = identity_embeddings(faces, analyzer, embedded)
        embeds.append(person)
        notes += skipped + ([note] if note else [])
    return embeds, notes


def run_edit(request: EditRequest, out_dir: Path, *, pipeline=None, progress=None, overwrite: bool = False,
             cancel: Optional[CancelToken] = None) -> dict:
    """Swap/inpaint the faces of `request.target` (photo or video) and write the result and
    `record.json` to `out_dir`. `pipeline`: a built `(pipeline, is_embedded_default)` to reuse.
    `overwrite`: replace earlier results of the same names (else an `OutputError` before the run).
    `progress`: `callable(done, total)` after each face of a photo or each frame of a video (None:
    nothing for a photo, tqdm bars for a video). `cancel`: checked at every denoising step (a
    cancelled job raises `idgen.jobs.JobCancelled` and writes nothing)."""
    # lazy (also in `_source_embeddings`): torch, diffusers, OpenCV; keeps `idgen --help` under 1.5 s
    from idgen.app.stamping import job_provenance
    from idgen.face import get_face_analyzer
    from idgen.identity import analyze_photo
    from idgen.image_io import load_image
    from idgen.app.enhance_options import crop_enhancer
    from idgen.media.video_faces import require_processed_faces
    from idgen.models.enhancers import load_face_parser, load_occluder
    from idgen.models.recipes import build_edit_pipeline
    from idgen.outputs import OutputFolder
    from idgen.pipelines import FaceSwapper
    from idgen.testing import EMBEDDED_DEFAULT_NOTE

    if not request.sources or not all(request.sources):
        raise IdgenError("give at least one source photo.")
    target = Path(request.target)
    is_video = target.suffix.lower() in VIDEO_SUFFIXES
    if is_video and (request.mask or request.targets):
        raise IdgenError("--mask and --target are for photos; videos are edited on every tracked face.")
    name = f"{target.stem}-{request.method}.mp4" if is_video else f"{target.stem}-{request.method}-{request.seed}.png"
    folder = OutputFolder(out_dir, overwrite=overwrite, hint="pass --overwrite")
    folder.claim(name, "record.json")
    pipe, embedded = pipeline or build_edit_pipeline(request.method, base=request.base, adapter=request.adapter,
                                                     embedded_default=request.embedded_default,
                                                     offload=request.memory != "max")
    pipe.set_progress_bar_config(disable=True)
    speed = accelerate(pipe, request)
    analyzer = get_face_analyzer(request.face_backend)
    embeds, notes = _source_embeddings(request, analyzer, embedded)
    references = [analyze_photo(p, analyzer)[1].embedding for p in request.references] or None
    sampling = sampling_defaults(pipe, request.steps, request.guidance_scale, embedded,
                                 default_steps=VIDEO_STEPS if is_video else None)
    generation = {"negative_prompt": request.negative_prompt, "strength": request.strength, **sampling}
    if cancel is not None:
        generation["callback_on_step_end"] = cancel.on_step_end
    # the face parser and occluder when configured: parsed regions, and occluders kept by default
    occluder = load_occluder() if request.occlusion else None
    swapper = FaceSwapper(pipe, analyzer, parser=load_face_parser(), occluder=occluder)
    enhance_crops, enhance = crop_enhancer(request)
    common = dict(mapping=request.mapping, reference_embeds=references, region=request.region, keep=request.keep,
                  occlusion=request.occlusion, dilate=request.dilate, feather=request.feather,
                  color_match=request.color_match, seed=request.seed, identity_scale=request.identity_scale,
                  prompt=request.prompt, batch_size=request.batch_size, enhance_crops=enhance_crops, **generation)
    weights = EDIT_WEIGHTS[request.method]
    provenance = job_provenance(  # known before the run: a video is stamped frame by frame as it is written
        request.operation, request.method, weights, embedded=embedded,
        overrides={weights[0]: request.base, EDIT_ADAPTER[request.method]: request.adapter},
        parameters={**{k: v for k, v in generation.items() if k != "callback_on_step_end"}, "seed": request.seed,
                    "identity_scale": request.identity_scale, "prompt": request.prompt, "region": request.region,
                    "keep": list(request.keep), "enhance": request.enhance, "pipeline": type(pipe).__name__},
        face_swap=True)  # an identity inpaint puts the source person's face in the photo: a face swap too
    started = time.perf_counter()
    exclude = load_image(request.exclude) if request.exclude else None
    with folder:
        if is_video:
            with folder.writing(name) as output:
                report = swapper.swap_video(target, output, embeds, exclude=exclude, provenance=provenance,
                                            progress=True if progress is None else progress, **common)
            require_processed_faces(report, target)
            details = {"video": asdict(report), "notes": report.notes}
        else:
            user_mask = load_image(request.mask) if request.mask else None
            result = swapper(target, embeds, user_mask=user_mask, exclude=exclude, targets=request.targets,
                             progress=progress, **{**common, "region": "custom" if user_mask is not None else request.region})
            folder.write_image(name, result.image, provenance)
            details = {"faces": [asdict(f) for f in result.faces], "notes": result.notes}
        record = {
            "request": asdict(request), "embedded_default": embedded,
            "note": EMBEDDED_DEFAULT_NOTE if embedded else None, "embedding_notes": notes,
            "parameters": {"num_inference_steps": generation["num_inference_steps"], "strength": request.strength,
                           # CFG as diffusers' loop stored it (None when no face was edited)
                           "guidance_scale": generation.get("guidance_scale", getattr(pipe, "_guidance_scale", None)),
                           "seed": request.seed,
                           "identity_scale": request.identity_scale if request.identity_scale is not None else
                           pipe.default_identity_scale},
            "pipeline": type(pipe).__name__, "crop_size": swapper.crop_size, "face_backend": analyzer.name,
            "face_parser": swapper.parser is not None, "occluder": swapper.occluder is not None, "enhance": enhance,
            "output": str(folder.path / name), "seconds": round(time.perf_counter() - started, 3), **details,
            "provenance": provenance.to_dict() if provenance is not None else None, "speed": speed,
        }
        folder.write_bytes("record.json", json_bytes(record))
    return record


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="pva", choices=EDIT_METHODS, help="identity-inpainting adapter (default pva)")
    parser.add_argument("--region", default="face", metavar="REGION",
                        help="what is repainted: face or face_hair (landmark hull), or face-parsing classes such as "
                             "skin,nose,mouth (groups: face, eyes, brows, lips, ears, glasses, hair, hat, neck; needs "
                             "the face parser, see `idgen doctor`)")
    parser.add_argument("--keep", type=names_list, default=(), metavar="CLASSES",
                        help="face-parsing classes never repainted, e.g. glasses,hair (needs the face parser)")
    parser.add_argument("--no-occlusion", dest="occlusion", action="store_false",
                        help="repaint what covers the face too (by default, with a face parser or occluder configured, "
                             "hands and objects over the face are kept)")
    parser.add_argument("--exclude", metavar="MASK", help="occluders to keep (hands, hair): white = never repaint")
    parser.add_argument("--dilate", type=arguments.integer(0, MAX_MASK_PIXELS), default=8, help="grow the mask by N crop pixels (default 8)")
    parser.add_argument("--feather", type=arguments.integer(0, MAX_MASK_PIXELS), default=8, help="seam feather in crop pixels (default 8)")
    parser.add_argument("--prompt", default="photo of a person")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--base", metavar="PATH", help="inpainting base model folder (default: configured)")
    parser.add_argument("--adapter", metavar="PATH", help="adapter file or folder (default: configured)")
    parser.add_argument("--out", default="outputs", metavar="DIR")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier results of the same names in --out")
    parser.add_argument("--seed", type=arguments.seed, default=0)
    parser.add_argument("--steps", type=arguments.steps, default=None,
                        help=f"denoising steps (default: the pipeline's for photos, {VIDEO_STEPS} for videos)")
    parser.add_argument("--batch-size", type=arguments.integer(1), default=None,
                        help="most face crops per diffusion call (video frames, faces of a photo; default: 8 crops "
                             "of 512 px, 2 of 1024 px); more is faster and takes more memory, the result is the same")
    parser.add_argument("--guidance-scale", type=arguments.scale, default=None)
    parser.add_argument("--identity-scale", type=arguments.scale, default=None)
    parser.add_argument("--strength", type=arguments.number(0.0, 1.0, low_open=True), default=1.0,
                        help="in (0, 1]; 1 = repaint the masked area from noise")
    parser.add_argument("--no-color-match", dest="color_match", action="store_false")
    parser.add_argument("--backend", choices=["dlib", "insightface"], default=None, help="face backend")
    parser.add_argument("--tiny", action="store_true", help="force the tiny embedded default (random weights)")
    add_speed_arguments(parser)
    add_enhance_arguments(parser)


def _request(args: argparse.Namespace, target: str, sources: list[list[str]], **extra) -> EditRequest:
    return EditRequest(
        target=target, sources=sources, method=args.method, region=args.region, keep=args.keep,
        occlusion=args.occlusion, exclude=args.exclude,
        dilate=args.dilate, feather=args.feather, prompt=args.prompt, negative_prompt=args.negative_prompt,
        base=args.base, adapter=args.adapter, seed=args.seed, steps=args.steps, guidance_scale=args.guidance_scale,
        identity_scale=args.identity_scale, strength=args.strength, color_match=args.color_match,
        batch_size=args.batch_size, face_backend=args.backend, embedded_default=True if args.tiny else None,
        **speed_arguments(args), **enhance_arguments(args), **extra,
    )


def _print(record: dict) -> int:
    print(record["output"])
    for note in [record.get("note"), *record.get("embedding_notes", []), *record.get("notes", [])]:
        if note:
            print(f"note: {note}")
    return 0


def _cmd_inpaint(args: argparse.Namespace) -> int:
    request = _request(args, args.image, [args.face], mask=args.mask, operation="inpaint",
                       targets=None if args.target is None else [args.target])
    return _print(run_edit(request, Path(args.out), overwrite=args.overwrite))


def _cmd_swap(args: argparse.Namespace) -> int:
    request = _request(args, args.input, args.source, mapping=args.map, references=args.reference or [],
                       operation="swap")
    return _print(run_edit(request, Path(args.out), overwrite=args.overwrite))


def add_parsers(sub) -> None:
    """Register `idgen inpaint` and `idgen swap` on the CLI's subparsers."""
    inpaint = sub.add_parser("inpaint", help="repaint a face of a photo as the person in --face photos")
    inpaint.add_argument("image", help="the photo to edit")
    inpaint.add_argument("--face", required=True, nargs="+", metavar="PHOTO", help="1-20 photos of the person")
    inpaint.add_argument("--mask", metavar="MASK", help="custom repaint mask for the photo (white = repaint); "
                         "default: the face region from landmarks")
    inpaint.add_argument("--target", type=arguments.integer(0), default=None, help="which face (left-to-right index); default all")
    _common_arguments(inpaint)
    inpaint.set_defaults(func=_cmd_inpaint)

    swap = sub.add_parser("swap", help="swap the faces of a photo or video for the --source person(s)")
    swap.add_argument("input", help="photo or video (mp4, mov, mkv, avi, webm)")
    swap.add_argument("--source", required=True, nargs="+", action="append", metavar="PHOTO",
                      help="photos of one source person; repeat --source for several people")
    swap.add_argument("--map", default="all", choices=["all", "index", "reference"],
                      help="all faces to source 1 (default), by left-to-right index, or by --reference photos")
    swap.add_argument("--reference", action="append", metavar="PHOTO",
                      help="with --map reference: a photo of the target person each --source replaces (in order)")
    _common_arguments(swap)
    swap.set_defaults(func=_cmd_swap)
