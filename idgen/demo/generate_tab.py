"""Generate tab: InstantID / FaceID / FaceID-Plus v2 / Arc2Face from uploaded face photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from idgen.errors import IdgenError
from idgen.generate import METHODS, SCHEDULERS

from .common import ASSETS, DemoContext, friendly, optional, paths, step_progress


def draw_faces(photo_path: str, analyzer) -> tuple[np.ndarray, int]:
    """The photo with each detected face's box, index (largest first) and InstantID keypoints."""
    import cv2

    from idgen.conditioning import draw_kps
    from idgen.image_io import load_image

    photo = load_image(photo_path)
    faces = analyzer.detect(photo)
    canvas = photo.copy()
    for i, face in enumerate(faces):
        drawn = np.asarray(draw_kps((photo.shape[1], photo.shape[0]), face.kps))
        canvas = np.where(drawn.sum(-1, keepdims=True) > 0, drawn, canvas)
        x1, y1, x2, y2 = (int(v) for v in face.bbox)
        thickness = max(2, photo.shape[1] // 300)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (255, 255, 255), thickness)
        cv2.putText(canvas, str(i), (x1 + 4, max(20, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX, max(0.6, photo.shape[1] / 600),
                    (255, 255, 255), thickness)
    return canvas, len(faces)


def detect_faces(ctx: DemoContext, files, backend=None):
    """Gallery items `(image, caption)`: every uploaded photo with its faces numbered."""
    from idgen.face import get_face_analyzer

    photos = paths(files)
    if not photos:
        raise IdgenError("upload at least one face photo.")
    analyzer = get_face_analyzer(backend)
    items = []
    for path in photos:
        canvas, count = draw_faces(path, analyzer)
        items.append((canvas, f"{Path(path).name}: {count} face(s)" + ("" if count else " — no face found")))
    return items


def run_generate(ctx: DemoContext, method, files, face_index, pose, prompt, negative_prompt, steps, guidance_scale,
                 seed, identity_scale, control_scale, width, height, scheduler, num_images, identity_start,
                 identity_end, progress=None):
    """One generation; returns (image paths, record, downloadable files)."""
    from idgen.generate import GenerationRequest, build_pipeline, generate

    if method not in METHODS:
        raise IdgenError(f"choose a method among {METHODS}.")
    extra = {}
    if float(identity_start) > 0 or float(identity_end) < 1:
        names = {"instantid": ("identity_guidance_start", "identity_guidance_end"),
                 "arc2face": None}.get(method, ("identity_start", "identity_end"))
        if names is None:
            raise IdgenError("Arc2Face has no identity window: the identity is its whole prompt.")
        extra = {names[0]: float(identity_start), names[1]: float(identity_end)}
    request = GenerationRequest(
        method=method, faces=paths(files), prompt=prompt or "photo of a person", negative_prompt=optional(negative_prompt),
        pose=optional(pose), seed=int(seed), steps=int(steps) if optional(steps) else None,
        guidance_scale=optional(guidance_scale), identity_scale=None if method == "arc2face" else optional(identity_scale),
        control_scale=optional(control_scale) if method == "instantid" else None,
        width=int(width) if optional(width) else None, height=int(height) if optional(height) else None,
        num_images=int(num_images), face_index=int(face_index) if optional(face_index) is not None else None,
        scheduler=None if scheduler in (None, "default") else scheduler, embedded_default=ctx.tiny, extra=extra,
    )
    built = ctx.pipeline(("generate", method), lambda: build_pipeline(method, embedded_default=ctx.tiny))
    out = ctx.out_dir(method)
    record = generate(request, out, pipeline=built, progress=step_progress(progress, "denoising"))
    files_out = record["files"] + [str(out / "record.json")]
    return record["files"], record, files_out


def build_generate_tab(ctx: DemoContext) -> None:
    import gradio as gr

    with gr.Tab("Generate", id="generate"):
        with gr.Row():
            with gr.Column():
                method = gr.Radio(list(METHODS), value="instantid", label="Method", elem_id="gen-method")
                faces = gr.File(label="Face photos (one person; several photos are averaged)", file_count="multiple",
                                file_types=["image"], elem_id="gen-faces")
                detect = gr.Button("Show detected faces")
                found = gr.Gallery(label="Detected faces (index, box, keypoints)", columns=3, height=220)
                face_index = gr.Number(label="Face to use in each photo (index shown above; empty = largest)",
                                       value=None, precision=0)
                pose = gr.Image(label="Pose photo (InstantID; optional)", type="filepath")
                prompt = gr.Textbox(label="Prompt", value="photo of a person in a garden", elem_id="gen-prompt")
                negative = gr.Textbox(label="Negative prompt", value="")
                with gr.Accordion("Advanced", open=False):
                    with gr.Row():
                        steps = gr.Number(label="Steps (empty = method default)", value=None, precision=0)
                        guidance = gr.Number(label="CFG scale (empty = default)", value=None)
                        seed = gr.Number(label="Seed", value=0, precision=0)
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
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="gen-run")
                    stop = gr.Button("Cancel")
            with gr.Column():
                gallery = gr.Gallery(label="Results", columns=2, elem_id="gen-results")
                record = gr.JSON(label="Parameters")
                files = gr.File(label="Download (images + record.json)", file_count="multiple")
        if ASSETS.is_dir():
            gr.Examples([[[str(ASSETS / "portrait_glasses.jpg")], str(ASSETS / "pose_fullbody_b.jpg"),
                          "photo of a person in a garden"]], [faces, pose, prompt])
        detect.click(friendly(lambda f: detect_faces(ctx, f)), [faces], [found], api_name="detect_faces")

        def _run(*args, progress=gr.Progress()):
            return run_generate(ctx, *args, progress=progress)

        event = run.click(friendly(_run), [method, faces, face_index, pose, prompt, negative, steps, guidance, seed,
                                            identity_scale, control_scale, width, height, scheduler, num_images,
                                            identity_start, identity_end], [gallery, record, files], api_name="generate")
        stop.click(None, cancels=[event], api_name=False)
