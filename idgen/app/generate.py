"""One generation from face photos: what `idgen generate` and the demo run.

Builds the pipeline for a method from configured weights (see `idgen.models`) or, when none are
configured, from the tiny embedded default; analyses the photos once; runs; writes the images
and a JSON record of every parameter.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

import diffusers
import torch

from idgen.errors import FaceNotFoundError, FaceTooSmallError, IdgenError, ImageReadError, MultipleFacesError
from idgen.app.options import PromptOptions
from idgen.app.records import call_default, json_bytes
from idgen.app.speed_options import accelerate, sampling_defaults
from idgen.app.stamping import job_provenance
from idgen.conditioning import draw_kps, fit_kps
from idgen.face import align_face, get_face_analyzer
from idgen.identity import analyze_photo
from idgen.outputs import OutputFolder
from idgen.resources import check_fits
from idgen.models.recipes import ARCFACE_DIM, GENERATION_ADAPTER, GENERATION_WEIGHTS, build_generation_pipeline
from idgen.testing import EMBEDDED_DEFAULT_NOTE
from idgen.validation import (
    InvalidArgumentError, check_fraction, check_integer, check_output_size, check_scale, check_size,
)

logger = logging.getLogger(__name__)

#: Scheduler choices of `GenerationRequest.scheduler` (diffusers class names).
SCHEDULERS = {"DPM++ 2M": "DPMSolverMultistepScheduler", "Euler": "EulerDiscreteScheduler",
              "Euler a": "EulerAncestralDiscreteScheduler", "DDIM": "DDIMScheduler", "UniPC": "UniPCMultistepScheduler"}


@dataclass
class GenerationRequest(PromptOptions):
    """Everything one generation needs (and `PromptOptions`). `None` fields take the method's
    official default."""

    method: str
    faces: list[str]
    pose: Optional[str] = None
    control_scale: Optional[float] = None
    identity_start: Optional[float] = None  # the fraction of the steps the identity acts in (None: all)
    identity_end: Optional[float] = None
    width: Optional[int] = None
    height: Optional[int] = None
    num_images: int = 1
    reference_mode: str = "mean"
    face_index: Optional[int] = None  # which face of each photo (largest first); None: the largest
    scheduler: Optional[str] = None  # a key of SCHEDULERS; None: the pipeline's own
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        if self.control_scale is not None:
            self.control_scale = check_scale("control_scale", self.control_scale)
        for name in ("identity_start", "identity_end"):
            if getattr(self, name) is not None:
                setattr(self, name, check_fraction(name, getattr(self, name)))
        if (self.identity_start or 0.0) >= (1.0 if self.identity_end is None else self.identity_end):
            raise InvalidArgumentError(
                f"identity_start ({self.identity_start}) must be below identity_end ({self.identity_end}): the "
                "identity would act in no step.")
        for name in ("width", "height"):
            if getattr(self, name) is not None:
                setattr(self, name, check_size(name, getattr(self, name)))
        check_output_size(self.width, self.height, self.num_images)
        if self.face_index is not None:
            self.face_index = check_integer("face_index", self.face_index, low=0)


def identity_embeddings(faces, analyzer, embedded: bool) -> tuple[np.ndarray, Optional[str]]:
    """`[N, 512]` ArcFace embeddings of the faces, and a note when they are a stand-in.

    The official adapters need insightface's 512-d ArcFace. With the embedded default and only
    dlib available, dlib's 128-d vector is tiled to 512 (labelled in the record): the plumbing
    is exercised, the identity is not ArcFace's.
    """
    embeds = np.stack([f.embedding for f in faces])
    if embeds.shape[1] == ARCFACE_DIM:
        return embeds, None
    if embedded and ARCFACE_DIM % embeds.shape[1] == 0:
        return np.tile(embeds, (1, ARCFACE_DIM // embeds.shape[1])), (
            f"{analyzer.embedding_model} {embeds.shape[1]}-d embedding tiled to {ARCFACE_DIM}-d (embedded default only)")
    raise IdgenError(
        f"the {analyzer.name!r} face backend gives {embeds.shape[1]}-d embeddings; the official adapters need "
        f"insightface's {ARCFACE_DIM}-d ArcFace. Install an insightface pack (antelopev2) — see `idgen doctor`."
    )


def faces_of_photos(paths, analyzer, select="largest") -> tuple[list[np.ndarray], list, list[str]]:
    """Load each reference photo of one person and find its face: `(photos, faces, notes)`.

    A photo that can't be used (unreadable, no face, the face too small) is skipped with a note
    when others remain, so one bad photo among ten does not stop the job; when none remains the
    first photo's error is raised.
    """
    photos, faces, notes, first_error = [], [], [], None
    for path in paths:
        try:
            photo, face = analyze_photo(path, analyzer, select)
        except (ImageReadError, FaceNotFoundError, FaceTooSmallError, MultipleFacesError) as e:
            first_error = first_error or e
            notes.append(f"reference photo skipped: {e}")
            continue
        photos.append(photo)
        faces.append(face)
    if not faces:
        raise first_error
    return photos, faces, notes


def used_parameters(pipe, request: GenerationRequest, kwargs: dict, size: tuple[int, int]) -> dict:
    """The sampling values a finished call used, for `record.json`: what was passed, else the
    pipeline's default (steps: `__call__`'s; CFG: what diffusers' loop stored; identity scale: the
    adapter's configured scale; IdentityNet scale: `__call__`'s)."""
    used = {"num_inference_steps": kwargs["num_inference_steps"], "guidance_scale": pipe.guidance_scale,
            "width": size[0], "height": size[1], "seed": request.seed}
    if "eta" in kwargs:
        used["eta"] = kwargs["eta"]
    if request.method != "arc2face":
        used["identity_scale"] = kwargs.get("identity_scale", pipe.default_identity_scale)
    if request.method == "instantid":
        used["controlnet_conditioning_scale"] = kwargs.get(
            "controlnet_conditioning_scale", call_default(pipe, "controlnet_conditioning_scale"))
    return used


def _set_scheduler(pipe, name: Optional[str]) -> None:
    """Use scheduler `name` (a key of SCHEDULERS), or the pipeline's own for None (a reused
    pipeline gets its original scheduler back)."""

    original = pipe.__dict__.setdefault("_idgen_default_scheduler", pipe.scheduler)
    if name is None:
        pipe.scheduler = original
        return
    if name not in SCHEDULERS:
        raise IdgenError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {name!r}.")
    pipe.scheduler = getattr(diffusers, SCHEDULERS[name]).from_config(original.config)


def generate(request: GenerationRequest, out_dir: Path, *, pipeline=None, progress=None,
             overwrite: bool = False) -> dict:
    """Run one generation and write `out_dir/<method>-<seed>-<i>.png` and `record.json`.

    Args:
        pipeline: an already built `(pipeline, is_embedded_default)` to reuse (the demo keeps one).
        progress: optional `callable(step, total)` called after each denoising step; an exception
            it raises (the demo's `idgen.jobs.JobCancelled`) stops the job with nothing written.
        overwrite: replace results of the same names in `out_dir` (else an existing one is an
            `OutputError`, raised before anything runs). All files are written or none.

    Returns:
        The record written to `record.json` (parameters, faces, files, timing).
    """

    if not request.faces:
        raise IdgenError("give at least one face photo.")
    if request.scheduler is not None and request.fast is not None:
        raise IdgenError(f"the fast preset {request.fast!r} sets its own scheduler; leave the scheduler unset.")
    if request.control_scale is not None and request.method != "instantid":
        raise IdgenError("--control-scale is the InstantID IdentityNet scale; other methods have no IdentityNet.")
    if request.method == "arc2face" and (request.identity_scale is not None or request.identity_start is not None
                                         or request.identity_end is not None):
        raise IdgenError("Arc2Face has no identity scale or window: the identity is its whole prompt.")
    folder = OutputFolder(out_dir, overwrite=overwrite, hint="pass --overwrite")
    names = [f"{request.method}-{request.seed}-{i}.png" for i in range(request.num_images)]
    keypoints_name = f"{request.method}-{request.seed}-keypoints.png"
    folder.claim(*names, *([keypoints_name] if request.method == "instantid" else []), "record.json")
    pipe, embedded = pipeline or build_generation_pipeline(request.method, base=request.base, adapter=request.adapter,
                                                           embedded_default=request.embedded_default,
                                                           offload=request.memory != "max")
    pipe.set_progress_bar_config(disable=True)
    speed = accelerate(pipe, request)
    analyzer = get_face_analyzer(request.face_backend)
    select = "largest" if request.face_index is None else int(request.face_index)
    photos, faces, skipped = faces_of_photos(request.faces, analyzer, select)
    _set_scheduler(pipe, request.scheduler)
    embeds, embed_note = identity_embeddings(faces, analyzer, embedded)
    # the app's one identity input: the analysed Face records (keypoints, size), with the
    # embedding the adapters take
    people = [dataclasses.replace(face, embedding=e) for face, e in zip(faces, embeds)]

    # Arc2Face's prompt is the identity prompt ("photo of a id person"), not free text.
    prompt = {} if request.method == "arc2face" else {"prompt": request.prompt}
    sampling = sampling_defaults(pipe, request.steps, request.guidance_scale, embedded)
    kwargs = dict(**prompt, negative_prompt=request.negative_prompt, face_embeds=people,
                  reference_mode=request.reference_mode, **sampling,
                  num_images_per_prompt=request.num_images, generator=torch.Generator("cpu").manual_seed(request.seed),
                  output_type="pil", **request.extra)
    for key, value in (("identity_scale", request.identity_scale),
                       ("identity_start", request.identity_start), ("identity_end", request.identity_end),
                       ("width", request.width), ("height", request.height)):
        if value is not None:
            kwargs[key] = value
    pose_face = None
    if request.method == "instantid":
        # The IdentityNet condition, drawn here so it is saved beside the images: the pose photo's
        # (else the first face's) keypoints fitted, aspect kept, into the size the pipeline picks.
        source = faces[0]
        if request.pose:
            source = pose_face = analyze_photo(request.pose, analyzer)[1]
        width, height = pipe.output_size(source.image_size, request.width, request.height)
        kwargs.update(image=draw_kps((width, height), fit_kps(source.kps, source.image_size, (width, height))),
                      width=width, height=height)
        if request.control_scale is not None:
            kwargs["controlnet_conditioning_scale"] = request.control_scale
    elif request.method == "faceid-plusv2":
        kwargs["face_crop"] = [align_face(photo, face.kps, size=224).image for photo, face in zip(photos, faces)]
    default_size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    check_fits(pipe, kwargs.get("width") or default_size, kwargs.get("height") or default_size, request.num_images,
               guidance=kwargs.get("guidance_scale", 2.0) > 1.0)
    if progress is not None:
        def _callback(p, step, timestep, tensors):
            progress(step + 1, p.num_timesteps)
            return tensors
        kwargs["callback_on_step_end"] = _callback

    started = time.perf_counter()
    images = pipe(**kwargs).images
    seconds = time.perf_counter() - started

    record = {
        "request": request,
        "embedded_default": embedded,
        "note": EMBEDDED_DEFAULT_NOTE if embedded else None,
        "embedding_note": embed_note, "notes": skipped,
        "parameters": used_parameters(pipe, request, kwargs, images[0].size),
        "width": images[0].size[0], "height": images[0].size[1],
        "face_backend": analyzer.name, "embedding_model": analyzer.embedding_model,
        "faces": [f.to_dict() for f in faces],
        "pose_face": pose_face.to_dict() if pose_face is not None else None,
        "pipeline": type(pipe).__name__, "scheduler": type(pipe.scheduler).__name__,
        "files": [str(folder.path / name) for name in names], "seconds": round(seconds, 3),
        "speed": speed,
    }
    weights = GENERATION_WEIGHTS[request.method]
    provenance = job_provenance(
        "generate", request.method, weights, embedded=embedded,
        overrides={weights[0]: request.base, GENERATION_ADAPTER[request.method]: request.adapter},
        parameters={**record["parameters"], **prompt, "negative_prompt": request.negative_prompt,
                    "reference_mode": request.reference_mode, "pipeline": record["pipeline"],
                    "scheduler": record["scheduler"]})
    record["provenance"] = provenance.to_dict() if provenance is not None else None
    with folder:
        for name, image in zip(names, images):
            folder.write_image(name, image, provenance)
        if request.method == "instantid":
            folder.write_with(keypoints_name, lambda path: kwargs["image"].save(path, format="PNG"))
        folder.write_bytes("record.json", json_bytes(record))
    return record
