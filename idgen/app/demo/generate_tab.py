"""Generate tab: every generation method (InstantID SDXL/SD1.5, FaceID, FaceID-Plus v2, FaceID-SDXL,
FaceID-Portrait, Arc2Face, PuLID) from uploaded face photos, with several people per image
(faces picked on the photos and assigned to regions), an extra ControlNet, img2img, a style
preset or style image, and negative noise."""

import functools
from pathlib import Path
from typing import Optional

import numpy as np

import cv2

from idgen.errors import IdgenError
from idgen.app.controls import ControlSpec
from idgen.app.generate import SCHEDULERS, GenerationRequest, generate
from idgen.app.people import REGIONS, Person
from idgen.models.methods import GENERATION_METHODS, TINY_CONTROLNET
from idgen.models.recipes import build_generation_pipeline
from idgen.style import STYLE_BLOCKS, STYLE_PRESETS

from idgen.app.demo.common import (
    ASSETS, DemoContext, Job, enhance_controls, enhance_options, friendly, job_status, model_job, optional, paths, run_and_cancel_buttons,
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


def face_photos(ctx: DemoContext, files, backend=None) -> list[int]:
    """The photo number (1 = first upload) of each item of `detect_faces`'s gallery, in its order."""
    analyzer = get_face_analyzer(backend)
    out = []
    for number, path in enumerate(paths(files), start=1):
        try:
            count = len(analyzer.get(load_image(path), select="all"))  # cached by content: no second detection
        except IdgenError:
            count = 1  # the photo's tile with the reason
        out.extend([number] * count)
    return out


def pick_face(indices: list, item: int) -> Optional[int]:
    """The face index of gallery item `item` (None for a photo without a usable face)."""
    return indices[item] if 0 <= item < len(indices) else None


#: The People table's columns: the photo (1 = the first uploaded), its face (0 = the largest), the region.
PEOPLE_HEADERS = ["photo", "face", "region"]
#: Control kinds the demo offers (`idgen.app.controls`: canny is computed from the image).
CONTROL_KINDS = ("canny", "depth", "pose", "other")


def _rows(table) -> list[list]:
    """The People table's rows (a Gradio Dataframe value: a pandas frame, a dict or a list)."""
    if table is None:
        return []
    if hasattr(table, "values") and hasattr(table, "columns"):
        rows = table.values.tolist()
    elif isinstance(table, dict):
        rows = table.get("data") or []
    else:
        rows = list(table)
    return [row for row in rows if any(optional(v) is not None for v in row)]


def people_from_table(table, photos: list[str]) -> list[Person]:
    """One `Person` per row `(photo number, face index, region)` of the People table."""
    people = []
    for i, row in enumerate(_rows(table)):
        if len(row) != 3:
            raise IdgenError(f"People row {i + 1}: expected photo, face and region, got {row!r}.")
        try:
            photo, face = int(float(row[0])), int(float(row[1]))
        except (TypeError, ValueError):
            raise IdgenError(f"People row {i + 1}: photo and face are numbers, got {row[0]!r} and {row[1]!r}.") from None
        if not 1 <= photo <= len(photos):
            raise IdgenError(f"People row {i + 1}: photo {photo} is not among the {len(photos)} uploaded photos.")
        people.append(Person([f"{photos[photo - 1]}#{face}"], box=optional(row[2])))
    return people


def add_person(table, picked: Optional[list], region: str) -> list[list]:
    """The People table with the picked face (`[photo number, face index]`) added in `region`."""
    if not picked:
        raise IdgenError("click a face under 'Detected faces' first, then add it as a person.")
    return [*_rows(table), [picked[0], picked[1], region]]


def run_generate(ctx: DemoContext, method, files, face_index, pose, prompt, negative_prompt, steps, guidance_scale,
                 seed, identity_scale, control_scale, width, height, scheduler, num_images, identity_start,
                 identity_end, style="none", style_image=None, style_scale=1.0, style_blocks="style",
                 negative_noise=None, init_image=None, strength=None, control_kind="canny", control_path=None,
                 control_image=None, control_weight=0.5, people=None, mode="standard", fast_paths=False,
                 fast_weights=None, lora=None, lora_scale=1.0, step_cache=0, memory="max", fp8=False,
                 enhance="off", enhance_weight=0.5, enhance_blend=1.0, job: Optional[Job] = None):
    """One generation; returns (image paths, record, downloadable files). `job`: its session,
    progress bar and cancel flag (default: a local job). `people`: the People table (rows of
    photo number, face index, region; empty = one person from all the photos)."""

    if method not in GENERATION_METHODS:
        raise IdgenError(f"choose a method among {GENERATION_METHODS}.")
    window = float(identity_start) > 0 or float(identity_end) < 1
    photos = paths(files)
    assigned = people_from_table(people, photos)
    controls = []
    if optional(control_image) is not None:
        controls = [ControlSpec(control_kind or "other", optional(control_path) or TINY_CONTROLNET, control_image,
                                0.5 if optional(control_weight) is None else float(control_weight))]
    request = GenerationRequest(
        method=method, faces=[] if assigned else photos, people=assigned, prompt=prompt or "photo of a person",
        negative_prompt=optional(negative_prompt),
        style=None if optional(style) in (None, "none") else style, style_image=optional(style_image),
        style_scale=1.0 if optional(style_scale) is None else float(style_scale), style_blocks=style_blocks or "style",
        negative_noise=optional(negative_noise), init_image=optional(init_image),
        strength=optional(strength) if optional(init_image) else None, controls=controls,
        pose=optional(pose), seed=int(seed), steps=int(steps) if optional(steps) else None,
        guidance_scale=optional(guidance_scale), identity_scale=None if method == "arc2face" else optional(identity_scale),
        control_scale=optional(control_scale) if method == "instantid" else None,
        width=int(width) if optional(width) else None, height=int(height) if optional(height) else None,
        num_images=int(num_images), face_index=int(face_index) if optional(face_index) is not None else None,
        scheduler=None if scheduler in (None, "default") else scheduler, embedded_default=ctx.tiny,
        identity_start=float(identity_start) if window else None, identity_end=float(identity_end) if window else None,
        **speed_options(mode, fast_paths, fast_weights, lora, lora_scale, step_cache, memory, fp8),
        **enhance_options(enhance, enhance_weight, enhance_blend),
    )
    if request.face_index is None and not assigned:
        _warn_if_several_faces(request.faces)
    job = job or Job()
    build = functools.partial(build_generation_pipeline, method, embedded_default=ctx.tiny,
                              offload=request.memory != "max", img2img=request.init_image is not None,
                              controls=[c.path for c in request.controls], style=request.style_image is not None)
    with ctx.pipeline(("generate", method, request.setup_key(), request.speed_key()), build, job) as built, \
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
                found_photos = gr.State([])
                picked = gr.State(None)
                with gr.Accordion("Several people (pick a face above, choose its region, add it)", open=False,
                                  elem_id="gen-people-section"):
                    with gr.Row():
                        region = gr.Dropdown(list(REGIONS), value="left", allow_custom_value=True,
                                             label="Region (a name or x1,y1,x2,y2)", elem_id="gen-region")
                        add = gr.Button("Add picked face as a person", size="sm", elem_id="gen-add-person")
                        clear = gr.Button("Clear people", size="sm", elem_id="gen-clear-people")
                    people = gr.Dataframe(headers=PEOPLE_HEADERS, datatype=["number", "number", "str"], value=[],
                                          label="People (photo 1 = first upload; empty = one person from all photos)",
                                          column_count=3, column_limits=(3, 3), interactive=True, elem_id="gen-people")
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
                with gr.Accordion("Style, img2img and extra ControlNet", open=False, elem_id="gen-extras"):
                    with gr.Row():
                        style = gr.Dropdown(list(STYLE_PRESETS), value="none", label="Style preset", elem_id="gen-style")
                        negative_noise = gr.Number(label="Negative noise (empty = zeros, official)", value=None)
                    with gr.Row():
                        style_image = gr.Image(label="Style image (InstantStyle)", type="filepath", elem_id="gen-style-image")
                        with gr.Column():
                            style_scale = gr.Number(label="Style scale", value=1.0)
                            style_blocks = gr.Radio(list(STYLE_BLOCKS), value="style", label="Style acts in")
                    with gr.Row():
                        init_image = gr.Image(label="Init image (InstantID img2img)", type="filepath", elem_id="gen-init")
                        strength = gr.Number(label="Strength (empty = default)", value=None)
                    with gr.Row():
                        control_image = gr.Image(label="ControlNet image (InstantID)", type="filepath", elem_id="gen-control-image")
                        with gr.Column():
                            control_kind = gr.Dropdown(list(CONTROL_KINDS), value="canny", label="Kind (canny: edges computed)")
                            control_path = gr.Textbox(label="ControlNet folder (empty = tiny, embedded default only)", value="")
                            control_weight = gr.Number(label="ControlNet scale", value=0.5)
                speed = speed_controls(gr, ctx, "gen")
                enhance = enhance_controls(gr, "gen")
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
        faces.change(lambda f: face_photos(ctx, f), [faces], [found_photos], api_name=False)

        def _pick(indices, photo_of, evt: gr.SelectData):  # a real annotation: Gradio passes the click by type
            face = pick_face(indices, evt.index)
            photo = photo_of[evt.index] if 0 <= evt.index < len(photo_of) else None
            return face, None if face is None or photo is None else [photo, face]

        found.select(_pick, [found_indices, found_photos], [face_index, picked], api_name=False, queue=False)
        faces.change(lambda: (None, None, []), None, [face_index, picked, people], api_name=False, queue=False)
        add.click(friendly(add_person), [people, picked, region], [people], api_name=False, queue=False)
        clear.click(lambda: [], None, [people], api_name=False, queue=False)

        model_job(ctx, run, stop, status, run_generate,
                  [method, faces, face_index, pose, prompt, negative, steps, guidance, seed, identity_scale,
                   control_scale, width, height, scheduler, num_images, identity_start, identity_end,
                   style, style_image, style_scale, style_blocks, negative_noise, init_image, strength,
                   control_kind, control_path, control_image, control_weight, people, *speed, *enhance],
                  [gallery, record, files], "generate")
