"""One generation from face photos: what `idgen generate` and the demo run.

Builds the pipeline for a method from configured weights (see `idgen.models`) or, when none are
configured, from the tiny embedded default; analyses the photos once; turns the request's people,
extra ControlNets, init image and style into the pipeline's inputs (`idgen.app.generation_inputs`);
runs; writes the images, the condition images and a JSON record of every parameter.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import diffusers
import numpy as np
import PIL.Image
import torch

from idgen.app.controls import ControlSpec, parse_control
from idgen.app.enhance_options import enhance_photos
from idgen.app.generation_inputs import analyse_people, condition_stems, prepare_inputs
from idgen.app.options import PromptOptions
from idgen.app.people import Person
from idgen.app.records import call_default, json_bytes
from idgen.app.speed_options import accelerate, sampling_defaults
from idgen.app.stamping import job_provenance
from idgen.errors import IdgenError
from idgen.face import get_face_analyzer
from idgen.models.methods import (
    CONTROL_METHODS, GENERATION_ADAPTER, GENERATION_METHODS, GENERATION_WEIGHTS, IMG2IMG_METHODS,
    MULTI_PERSON_METHODS, NEGATIVE_NOISE_METHODS, STYLE_IMAGE_METHODS,
)
from idgen.models.recipes import build_generation_pipeline
from idgen.outputs import OutputFolder
from idgen.resources import check_fits
from idgen.style import STYLE_BLOCKS, STYLE_PRESETS, apply_style_preset
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
    official default.

    The identity: `faces` (reference photos of one person), or `people` (several people, each a
    `Person` with its photos and region; dicts with the same keys are accepted). Extra inputs:
    `controls` (extra ControlNets, `ControlSpec`s or `--control` strings), `init_image` +
    `strength` (img2img), `style` (a prompt preset of `idgen.style.STYLE_PRESETS`),
    `style_image` + `style_scale` + `style_blocks` (an InstantStyle reference image),
    `negative_noise` (noise instead of zeros as the negative identity)."""

    method: str
    faces: list[str] = field(default_factory=list)
    people: list[Person] = field(default_factory=list)
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
    controls: list[ControlSpec] = field(default_factory=list)
    init_image: Optional[str] = None
    strength: Optional[float] = None
    style: Optional[str] = None
    style_image: Optional[str] = None
    style_scale: float = 1.0
    style_blocks: str = "style"
    negative_noise: Optional[float] = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        if self.method not in GENERATION_METHODS:
            raise InvalidArgumentError(f"method must be one of {', '.join(GENERATION_METHODS)}, got {self.method!r}.")
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
        if self.people and self.faces:
            raise InvalidArgumentError("give `faces` (one person) or `people` (several), not both.")
        self.people = [p if isinstance(p, Person) else Person(**p) for p in self.people] or (
            [Person(list(self.faces))] if self.faces else [])
        self.controls = [c if isinstance(c, ControlSpec) else parse_control(c) if isinstance(c, str) else ControlSpec(**c)
                         for c in self.controls]
        if self.strength is not None:
            self.strength = check_fraction("strength", self.strength)
            if self.strength == 0:
                raise InvalidArgumentError("strength must be above 0 (0 would return the init image unchanged).")
        if self.style is not None and self.style not in STYLE_PRESETS:
            raise InvalidArgumentError(f"style must be one of {', '.join(STYLE_PRESETS)}, got {self.style!r}.")
        if self.style_blocks not in STYLE_BLOCKS:
            raise InvalidArgumentError(f"style_blocks must be one of {', '.join(STYLE_BLOCKS)}, got {self.style_blocks!r}.")
        self.style_scale = check_scale("style_scale", self.style_scale)
        if self.negative_noise is not None:
            self.negative_noise = check_scale("negative_noise", self.negative_noise)
        self._check_method_takes_inputs()

    def _check_method_takes_inputs(self) -> None:
        """Each extra input only where the method has it (the message names both)."""
        m = self.method
        for given, methods, what in (
            (len(self.people) > 1, MULTI_PERSON_METHODS, "several people"),
            (any(p.box is not None or p.mask is not None for p in self.people), MULTI_PERSON_METHODS, "a person's region"),
            (bool(self.controls), CONTROL_METHODS, "extra ControlNets (--control)"),
            (self.init_image is not None, IMG2IMG_METHODS, "an init image (img2img)"),
            (self.style_image is not None, STYLE_IMAGE_METHODS, "a style reference image"),
            (self.negative_noise is not None, NEGATIVE_NOISE_METHODS, "negative noise"),
            (self.control_scale is not None, CONTROL_METHODS, "an IdentityNet scale (--control-scale)"),
        ):
            if given and m not in methods:
                raise InvalidArgumentError(f"{what} is not available with {m}; methods that take it: {', '.join(methods)}.")
        if self.strength is not None and self.init_image is None:
            raise InvalidArgumentError("strength is the img2img strength: give an init image too.")
        if m == "arc2face" and (self.identity_scale is not None or self.identity_start is not None
                                or self.identity_end is not None):
            raise InvalidArgumentError("Arc2Face has no identity scale or window: the identity is its whole prompt.")
        if m == "arc2face" and self.style not in (None, "none"):
            raise InvalidArgumentError("Arc2Face's prompt is its identity prompt: a style preset has no text to style.")
        if self.pose is not None and (len(self.people) > 1 or self.init_image is not None):
            raise InvalidArgumentError("--pose places one face; with several people give each a --box, and img2img "
                                       "takes the keypoints of the init image.")

    def setup_key(self) -> tuple:
        """What the pipeline is built for beyond the method and speed options: img2img, the extra
        ControlNets' folders, a style adapter (a pipeline is built once per key)."""
        return (self.init_image is not None, tuple(c.path for c in self.controls), self.style_image is not None)


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
    if request.method in CONTROL_METHODS:
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

    if not request.people:
        raise IdgenError("give at least one face photo.")
    if request.scheduler is not None and request.fast is not None:
        raise IdgenError(f"the fast preset {request.fast!r} sets its own scheduler; leave the scheduler unset.")
    folder = OutputFolder(out_dir, overwrite=overwrite, hint="pass --overwrite")
    names = [f"{request.method}-{request.seed}-{i}.png" for i in range(request.num_images)]
    condition_names = {stem: f"{request.method}-{request.seed}-{stem}.png" for stem in condition_stems(request)}
    folder.claim(*names, *condition_names.values(), "record.json")
    pipe, embedded = pipeline or build_generation_pipeline(
        request.method, base=request.base, adapter=request.adapter, embedded_default=request.embedded_default,
        offload=request.memory != "max", img2img=request.init_image is not None,
        controls=[c.path for c in request.controls], style=request.style_image is not None)
    pipe.set_progress_bar_config(disable=True)
    speed = accelerate(pipe, request)
    analyzer = get_face_analyzer(request.face_backend)
    people = analyse_people(request, analyzer, embedded)
    _set_scheduler(pipe, request.scheduler)

    # Arc2Face's prompt is the identity prompt ("photo of a id person"), not free text.
    prompt, negative = request.prompt, request.negative_prompt
    if request.style not in (None, "none"):
        prompt, negative = apply_style_preset(request.style, prompt, negative or "")
    prompt = {} if request.method == "arc2face" else {"prompt": prompt}
    sampling = sampling_defaults(pipe, request.steps, request.guidance_scale, embedded)
    inputs = prepare_inputs(pipe, request, people, analyzer)
    kwargs = dict(**prompt, negative_prompt=negative, reference_mode=request.reference_mode, **sampling,
                  num_images_per_prompt=request.num_images, generator=torch.Generator("cpu").manual_seed(request.seed),
                  output_type="pil", **inputs.kwargs, **request.extra)
    for key, value in (("identity_scale", request.identity_scale),
                       ("identity_start", request.identity_start), ("identity_end", request.identity_end)):
        if value is not None:
            kwargs[key] = value
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
    enhanced, enhance = enhance_photos(request, [np.asarray(image) for image in images], analyzer)
    if enhance is not None:
        images = [PIL.Image.fromarray(image) for image in enhanced]

    record = {
        "request": request,
        "embedded_default": embedded,
        "note": EMBEDDED_DEFAULT_NOTE if embedded else None,
        "embedding_note": next((p.embedding_note for p in people if p.embedding_note), None),
        "notes": [note for p in people for note in p.notes],
        "parameters": used_parameters(pipe, request, kwargs, images[0].size),
        "width": images[0].size[0], "height": images[0].size[1],
        "face_backend": analyzer.name, "embedding_model": analyzer.embedding_model,
        "faces": [f.to_dict() for p in people for f in p.faces],
        "people": [{"faces": [f.to_dict() for f in p.faces], "photos": person.faces, "box": person.box,
                    "mask": person.mask} for p, person in zip(people, request.people)],
        "pose_face": inputs.pose_face.to_dict() if inputs.pose_face is not None else None,
        "controls": [c.to_dict() for c in request.controls],
        "style": {"preset": request.style, "image": request.style_image, "scale": request.style_scale,
                  "blocks": request.style_blocks} if request.style or request.style_image else None,
        "init_image": request.init_image,
        "conditions": {stem: str(folder.path / name) for stem, name in condition_names.items()},
        "pipeline": type(pipe).__name__, "scheduler": type(pipe.scheduler).__name__,
        "files": [str(folder.path / name) for name in names], "seconds": round(seconds, 3),
        "speed": speed, "enhance": enhance,
    }
    weights = GENERATION_WEIGHTS[request.method]
    provenance = job_provenance(
        "generate", request.method, weights, embedded=embedded,
        overrides={weights[0]: request.base, GENERATION_ADAPTER[request.method]: request.adapter},
        parameters={**record["parameters"], **prompt, "negative_prompt": negative,
                    "reference_mode": request.reference_mode, "pipeline": record["pipeline"],
                    "scheduler": record["scheduler"], "enhance": request.enhance})
    record["provenance"] = provenance.to_dict() if provenance is not None else None
    with folder:
        for name, image in zip(names, images):
            folder.write_image(name, image, provenance)
        for stem, name in condition_names.items():
            folder.write_with(name, lambda path, image=inputs.conditions[stem]: image.save(path, format="PNG"))
        folder.write_bytes("record.json", json_bytes(record))
    return record
