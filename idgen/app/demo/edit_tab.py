"""Inpaint and Swap tabs: identity inpainting of a painted (or detected) region, face swap on
photos and videos."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from idgen.errors import IdgenError
from idgen.app.edit import EditRequest, run_edit
from idgen.models.methods import EDIT_METHODS
from idgen.models.recipes import build_edit_pipeline

from idgen.app.demo.common import (
    DemoContext, Job, enhance_controls, enhance_options, job_status, model_job, optional, paths, photo_or_video, result_column, run_and_cancel_buttons,
    sampling_controls, show_notes, speed_controls, speed_options,
)
from idgen.image_io import load_image


def editor_photo_and_mask(value) -> tuple[np.ndarray, np.ndarray | None]:
    """The photo `[H, W, 3]` and the painted mask `[H, W]` uint8 (None if nothing was painted)
    from a `gr.ImageEditor` value (`background` + RGBA `layers`)."""
    if value is None or value.get("background") is None:
        raise IdgenError("upload the photo to edit.")
    background = np.asarray(value["background"])
    photo = background[..., :3].astype(np.uint8)
    mask = None
    for layer in value.get("layers") or []:
        layer = np.asarray(layer)
        painted = layer[..., 3] > 0 if layer.ndim == 3 and layer.shape[-1] == 4 else layer.any(-1)
        mask = painted if mask is None else mask | painted
    if mask is not None and not mask.any():
        mask = None
    return photo, None if mask is None else mask.astype(np.uint8) * 255


def _edit(ctx: DemoContext, request: EditRequest, out: Path, job: Job):
    """Run `request` on the tab's cached pipeline, held by `job`; results go to `out`."""
    build = functools.partial(build_edit_pipeline, request.method, embedded_default=ctx.tiny,
                              offload=request.memory != "max")
    with ctx.pipeline(("edit", request.method, request.speed_key()), build, job) as built:
        record = run_edit(request, out, pipeline=built, progress=job.steps("editing"), cancel=job.token)
    show_notes(record["notes"])
    return record, [record["output"], str(out / "record.json")]


def _request_kwargs(method, prompt, steps, guidance_scale, seed, identity_scale, strength, dilate, feather, region,
                    keep, ctx: DemoContext, speed: dict) -> dict:
    if method not in EDIT_METHODS:
        raise IdgenError(f"choose a method among {EDIT_METHODS}.")
    return dict(method=method, prompt=prompt or "photo of a person", steps=int(steps) if optional(steps) else None,
                guidance_scale=optional(guidance_scale), seed=int(seed), identity_scale=optional(identity_scale),
                strength=float(strength), dilate=int(dilate), feather=int(feather), region=region,
                keep=optional(keep) or "", embedded_default=ctx.tiny, **speed)


def run_inpaint(ctx: DemoContext, editor, faces, method, prompt, steps, guidance_scale, seed, identity_scale,
                strength, dilate, feather, region, mode="standard", fast_paths=False, fast_weights=None, lora=None,
                lora_scale=1.0, step_cache=0, memory="max", fp8=False, enhance="off", enhance_weight=0.5,
                enhance_blend=1.0, keep="", job: Optional[Job] = None):
    """Repaint the painted area (or the detected face region) as the person of `faces`."""

    job = job or Job()
    speed = {**speed_options(mode, fast_paths, fast_weights, lora, lora_scale, step_cache, memory, fp8),
             **enhance_options(enhance, enhance_weight, enhance_blend)}
    photo, mask = editor_photo_and_mask(editor)
    photo = load_image(photo)  # the pixel limit
    with ctx.results("inpaint", job) as out:
        target = out / "photo.png"
        Image.fromarray(photo).save(target)
        mask_path = None
        if mask is not None:
            mask_path = out / "mask.png"
            Image.fromarray(mask).save(mask_path)
        sources = paths(faces)
        request = EditRequest(target=str(target), sources=[sources], mask=None if mask_path is None else str(mask_path),
                              operation="inpaint",
                              **_request_kwargs(method, prompt, steps, guidance_scale, seed, identity_scale, strength,
                                                dilate, feather, region, keep, ctx, speed))
        record, files = _edit(ctx, request, out, job)
    return record["output"], record, files


def run_swap(ctx: DemoContext, photo, video, source_1, source_2, mapping, references, method, prompt, steps,
             guidance_scale, seed, identity_scale, strength, dilate, feather, region, mode="standard",
             fast_paths=False, fast_weights=None, lora=None, lora_scale=1.0, step_cache=0, memory="max", fp8=False,
             enhance="off", enhance_weight=0.5, enhance_blend=1.0, keep="", job: Optional[Job] = None):
    """Swap the faces of a photo or a video; returns (image or None, video or None, record, files)."""
    if (photo is None) == (video is None):
        raise IdgenError("give either a photo or a video to swap faces in.")
    job = job or Job()
    speed = {**speed_options(mode, fast_paths, fast_weights, lora, lora_scale, step_cache, memory, fp8),
             **enhance_options(enhance, enhance_weight, enhance_blend)}
    sources = [s for s in (paths(source_1), paths(source_2)) if s]
    given = Path(photo or video)
    with ctx.results("swap", job) as out:
        target = out / f"target{given.suffix.lower() or '.png'}"
        target.write_bytes(given.read_bytes())
        request = EditRequest(target=str(target), sources=sources, mapping=mapping, references=paths(references),
                              **_request_kwargs(method, prompt, steps, guidance_scale, seed, identity_scale, strength,
                                                dilate, feather, region, keep, ctx, speed))
        record, files = _edit(ctx, request, out, job)
    is_video = "video" in record
    return (None if is_video else record["output"]), (record["output"] if is_video else None), record, files


def _advanced(gr, ctx: DemoContext, prefix: str):
    with gr.Accordion("Advanced", open=False):
        steps, guidance, seed = sampling_controls(gr)
        with gr.Row():
            identity_scale = gr.Number(label="Identity scale (empty = default)", value=None)
            strength = gr.Slider(0.1, 1.0, value=1.0, step=0.05, label="Strength (1 = repaint from noise)")
        with gr.Row():
            dilate = gr.Slider(0, 32, value=8, step=1, label="Mask dilation (crop px)")
            feather = gr.Slider(0, 32, value=8, step=1, label="Seam feather (crop px)")
            region = gr.Dropdown(["face", "face_hair", "skin,nose,mouth,lips,eyes,brows", "face,hair"], value="face",
                                 allow_custom_value=True, label="Region (no painted mask): landmark hull (face, "
                                 "face_hair) or parsed classes (needs the face parser)")
            keep = gr.Textbox("", label="Keep (parsed classes never repainted, e.g. glasses,hair)")
    return [steps, guidance, seed, identity_scale, strength, dilate, feather, region,
            *speed_controls(gr, ctx, prefix), *enhance_controls(gr, prefix), keep]


def build_inpaint_tab(ctx: DemoContext) -> None:
    import gradio as gr  # the demo extra: imported when a page is built, so the CLI and tests import this without it

    with gr.Tab("Inpaint", id="inpaint"):
        with gr.Row():
            with gr.Column():
                editor = gr.ImageEditor(label="Photo: paint over the area to repaint (nothing painted = the face)",
                                        type="numpy")
                faces = gr.File(label="Photos of the person (1-20)", file_count="multiple", file_types=["image"])
                method = gr.Radio(list(EDIT_METHODS), value="pva", label="Adapter")
                prompt = gr.Textbox(label="Prompt", value="photo of a person")
                advanced = _advanced(gr, ctx, "inpaint")
                run, stop = run_and_cancel_buttons("Inpaint", "inpaint")
                status = job_status("inpaint")
            with gr.Column():
                outputs = result_column()

        model_job(ctx, run, stop, status, run_inpaint, [editor, faces, method, prompt, *advanced], outputs, "inpaint")


def build_swap_tab(ctx: DemoContext) -> None:
    import gradio as gr  # the demo extra: imported when a page is built, so the CLI and tests import this without it

    with gr.Tab("Swap", id="swap"):
        with gr.Row():
            with gr.Column():
                photo, video = photo_or_video(gr, "Photo")
                source_1 = gr.File(label="Source person 1: photos", file_count="multiple", file_types=["image"])
                source_2 = gr.File(label="Source person 2 (optional)", file_count="multiple", file_types=["image"])
                mapping = gr.Radio(["all", "index", "reference"], value="all",
                                   label="Which face gets whom (all = person 1; index = left to right; reference = by photo)")
                references = gr.File(label="Reference photos of the target people (mapping = reference; one per source)",
                                     file_count="multiple", file_types=["image"])
                method = gr.Radio(list(EDIT_METHODS), value="pva", label="Adapter")
                prompt = gr.Textbox(label="Prompt", value="photo of a person")
                advanced = _advanced(gr, ctx, "swap")
                run, stop = run_and_cancel_buttons("Swap", "swap")
                status = job_status("swap")
            with gr.Column():
                outputs = result_column(with_video=True)

        model_job(ctx, run, stop, status, run_swap,
                  [photo, video, source_1, source_2, mapping, references, method, prompt, *advanced], outputs, "swap")
