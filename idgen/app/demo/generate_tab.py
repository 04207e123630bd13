"""Generate tab: InstantID / FaceID / FaceID-Plus v2 / Arc2Face from uploaded face photos."""

import functools
from pathlib import Path
from typing import Optional

import numpy as np

import cv2

from idgen.errors import IdgenError
from idgen.app.generate import SCHEDULERS, GenerationRequest, generate
from idgen.models.recipes import GENERATION_METHODS, build_generation_pipeline

from idgen.app.demo.common import (
    ASSETS, DemoContext, Job, friendly, job_status, model_job, optional, paths, run_and_cancel_buttons,
    sampling_controls, speed_controls, speed_options,
)
from idgen.conditioning import draw_kps_many
from idgen.face import get_face_analyzer
from idgen.image_io import load_image


def draw_faces(photo: np.ndarray, faces) -> np.ndarray:
    """`photo` `[H, W, 3]` with each face's box, index and InstantID keypoints (official colours)."""

    drawn = np.asarray(draw_kps_many((photo.shape[1], photo.shape[0]), [f.kps for f in faces]))
    canvas = np.where(drawn.sum(-1, keepdims=True) > 0, drawn, photo).astype(np.uint8)
    thickness = max(2, photo.shape[1] // 300)
    for i, face in enumerate(faces):
        x1, y1, x2, y2 = (int(v) for v in face.bbox)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (255, 255, 255), thickness)
        cv2.putText(canvas, str(i), (x1 + 4, max(20, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX, max(0.6, photo.shape[1] / 600),
                    (255, 255, 255), thickness)
    return canvas


def _thumbnail(canvas: np.ndarray, bbox, margin: float = 0.6) -> np.ndarray:
    """The face's box grown by `margin` of its size on each side, clipped to the image."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    h, w = canvas.shape[:2]
    return canvas[max(0, int(y1 - dy)):min(h, int(y2 + dy)), max(0, int(x1 - dx)):min(w, int(x2 + dx))]


def detect_faces(ctx: DemoContext, files, backend=None) -> tuple[list, list]:
    """The face picker: gallery items `(thumbnail, caption)`, one per usable face of each photo
    (numbered largest first, the order `GenerationRequest.face_index` uses), or the photo with
    the reason when it has none; and the face index of each item (None for those)."""

    analyzer = get_face_analyzer(backend)
    items, indices = [], []
    for path in paths(files):
        name = Path(path).name
        photo = load_image(path)
        try:
            faces = analyzer.get(photo, select="all")
        except IdgenError as e:  # no face / too small: shown on the photo's tile, not as a failure
            items.append((photo, f"{name}: {e}"))
            indices.append(None)
            continue
        canvas = draw_faces(photo, faces)
        for i, face in enumerate(faces):
            items.append((_thumbnail(canvas, face.bbox), f"{name}: face {i} of {len(faces)}"))
            indices.append(i)
    return items, indices


def pick_face(indices: list, item: int) -> Optional[int]:
    """The face index of gallery item `item` (None for a photo without a usable face)."""
    return indices[item] if 0 <= item < len(indices) else None


def run_generate(ctx: DemoContext, method, files, face_index, pose, prompt, negative_prompt, steps, guidance_scale,
                 seed, identity_scale, control_scale, width, height, scheduler, num_images, identity_start,
                 identity_end, mode="standard", fast_paths=False, fast_weights=None, lora=None, lora_scale=1.0,
                 step_cache=0, memory="max", fp8=False, job: Optional[Job] = None):
    """One generation; returns (image paths, record, downloadable files). `job`: its session,
    progress bar and cancel flag (default: a local job)."""

    if method not in GENERATION_METHODS:
        raise IdgenError(f"choose a method among {GENERATION_METHODS}.")
    window = float(identity_start) > 0 or float(identity_end) < 1
    request = GenerationRequest(
        method=method, faces=paths(files), prompt=prompt or "photo of a person", negative_prompt=optional(negative_prompt),
        pose=optional(pose), seed=int(seed), steps=int(steps) if optional(steps) else None,
        guidance_scale=optional(guidance_scale), identity_scale=None if method == "arc2face" else optional(identity_scale),
        control_scale=optional(control_scale) if method == "instantid" else None,
        width=int(width) if optional(width) else None, height=int(height) if optional(height) else None,
        num_images=int(num_images), face_index=int(face_index) if optional(face_index) is not None else None,
        scheduler=None if scheduler in (None, "default") else scheduler, embedded_default=ctx.tiny,
        identity_start=float(identity_start) if window else None, identity_end=float(identity_end) if window else None,
        **speed_options(mode, fast_paths, fast_weights, lora, lora_scale, step_cache, memory, fp8),
    )
    if request.face_index is None:
        _warn_if_several_faces(request.faces)
    job = job or Job()
    build = functools.partial(build_generation_pipeline, method, embedded_default=ctx.tiny,
                              offload=request.memory != "max")
    with ctx.pipeline(("generate", method, request.speed_key()), build, job) as built, \
            ctx.results(method, job) as out:
        record = generate(request, out, pipeline=built, progress=job.steps("denoising"))
    files_out = record["files"] + [str(out / "record.json")]
    return record["files"], record, files_out


def _warn_if_several_faces(photos: list[str]) -> None:
    """A toast (not an error) when a photo has several faces and none was picked: the largest is used."""
    import gradio as gr  # the demo extra: imported when a page is built, so the CLI and tests import this without it

    analyzer = get_face_analyzer()  # the one `generate` uses; detections are cached by content
    for path in photos:
        try:
            count = len(analyzer.get(path, select="all"))
        except IdgenError:
            continue  # `generate` reports it
        if count > 1:
            gr.Warning(f"{Path(path).name} has {count} faces: the largest (face 0) is used; click another in "
                       "'Detected faces' to choose.")


def build_generate_tab(ctx: DemoContext) -> None:
    import gradio as gr  # the demo extra: imported when a page is built, so the CLI and tests import this without it

    with gr.Tab("Generate", id="generate"):
        with gr.Row():
            with gr.Column():
                method = gr.Radio(list(GENERATION_METHODS), value="instantid", label="Method", elem_id="gen-method")
                faces = gr.File(label="Face photos (one person; several photos are averaged)", file_count="multiple",
                                file_types=["image"], elem_id="gen-faces")
                found = gr.Gallery(label="Detected faces (click the one to use)", columns=4, height=200,
                                   object_fit="contain", allow_preview=False, format="png", elem_id="gen-found")
                face_index = gr.Number(label="Face to use in each photo (set by clicking above; empty = the largest)",
                                       value=None, precision=0, elem_id="gen-face-index")
                found_indices = gr.State([])
                pose = gr.Image(label="Pose photo (InstantID; optional)", type="filepath")
                prompt = gr.Textbox(label="Prompt", value="photo of a person in a garden", elem_id="gen-prompt")
                negative = gr.Textbox(label="Negative prompt", value="")
                with gr.Accordion("Advanced", open=False, elem_id="gen-advanced"):
                    steps, guidance, seed = sampling_controls(gr, "Steps (empty = method default)", "gen-steps")
                    with gr.Row():
                        identity_scale = gr.Number(label="Identity scale (empty = default)", value=None)
                        control_scale = gr.Number(label="IdentityNet scale (InstantID)", value=None)
                        num_images = gr.Slider(1, 4, value=1, step=1, label="Images")
                    with gr.Row():
                        width = gr.Number(label="Width (empty = default)", value=None, precision=0)
                        height = gr.Number(label="Height (empty = default)", value=None, precision=0)
                        scheduler = gr.Dropdown(["default", *SCHEDULERS], value="default", label="Scheduler")
                    with gr.Row():
                        identity_start = gr.Slider(0, 1, value=0, step=0.05, label="Identity start (fraction of steps)")
                        identity_end = gr.Slider(0, 1, value=1, step=0.05, label="Identity end")
                speed = speed_controls(gr, ctx, "gen")
                run, stop = run_and_cancel_buttons("Generate", "gen")
                status = job_status("gen")
            with gr.Column():
                gallery = gr.Gallery(label="Results", columns=2, elem_id="gen-results")
                record = gr.JSON(label="Parameters")
                files = gr.File(label="Download (images + record.json)", file_count="multiple")
        if ASSETS.is_dir():
            gr.Examples([[[str(ASSETS / "portrait_glasses.jpg")], str(ASSETS / "pose_fullbody_b.jpg"),
                          "photo of a person in a garden"],
                         [[str(ASSETS / "portrait_glasses.jpg")], None, "portrait of a person, studio light"]],
                        [faces, pose, prompt])
        faces.change(friendly(lambda f: detect_faces(ctx, f)), [faces], [found, found_indices], api_name="detect_faces")

        def _pick(indices, evt: gr.SelectData):  # a real annotation: Gradio passes the click by type
            return pick_face(indices, evt.index)

        found.select(_pick, [found_indices], [face_index], api_name=False, queue=False)
        faces.change(lambda: None, None, [face_index], api_name=False, queue=False)

        model_job(ctx, run, stop, status, run_generate,
                  [method, faces, face_index, pose, prompt, negative, steps, guidance, seed, identity_scale,
                   control_scale, width, height, scheduler, num_images, identity_start, identity_end, *speed],
                  [gallery, record, files], "generate")
