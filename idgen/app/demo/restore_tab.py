"""Restore tab: blind face restoration of a damaged photo (restoration ControlNet, optional clean
reference) or video (SVFR: BFR, colorization, inpainting)."""

from __future__ import annotations


import torch
from PIL import Image

from idgen.errors import IdgenError
from idgen.app.records import write_json

from idgen.app.demo.common import DemoContext, model_job, optional, paths, result_column, run_and_cancel_buttons
from idgen.app.restore import build_restore_pipeline, restore_video
from idgen.face import get_face_analyzer


def run_restore(ctx: DemoContext, photo, video, reference, fidelity, tasks, steps, seed):
    """Restore a photo or a video; returns (image or None, video or None, record, files)."""

    if (photo is None) == (video is None):
        raise IdgenError("give either a photo or a video to restore.")
    kind = "video" if video is not None else "image"
    pipe, embedded = ctx.pipeline(("restore", kind), lambda: build_restore_pipeline(kind, embedded_default=ctx.tiny))
    pipe.set_progress_bar_config(disable=True)
    out = ctx.out_dir("restore")
    extra = {"num_inference_steps": int(steps)} if optional(steps) else {}
    analyzer = get_face_analyzer()
    if kind == "video":
        if not tasks:
            raise IdgenError("choose at least one restoration task.")
        output = out / "restored.mp4"
        report = restore_video(pipe, video, output, analyzer=analyzer, tasks=tuple(tasks), seed=int(seed), progress=False,
                               **extra)
        record = {"kind": kind, "tasks": list(tasks), "video": vars(report), "notes": report.notes}
    else:
        refs = paths(reference)
        identity = {"face_image": refs[0]} if refs else {}
        result = pipe.restore_faces(photo, analyzer=analyzer, fidelity=float(fidelity),
                                    generator=torch.Generator().manual_seed(int(seed)), **identity, **extra)
        output = out / "restored.png"
        Image.fromarray(result.image).save(output)
        record = {"kind": kind, "fidelity": float(fidelity), "faces": result.faces}
    record.update(embedded_default=embedded, pipeline=type(pipe).__name__, output=str(output))
    write_json(out / "record.json", record)
    files = [str(output), str(out / "record.json")]
    return (None, str(output), record, files) if kind == "video" else (str(output), None, record, files)


def build_restore_tab(ctx: DemoContext) -> None:
    import gradio as gr  # the demo extra: imported when a page is built, so the CLI and tests import this without it

    with gr.Tab("Restore", id="restore"):
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    photo = gr.Image(label="Damaged photo", type="filepath")
                    video = gr.Video(label="or video (audio is kept)")
                reference = gr.File(label="Clean reference photo of the person (photos; optional, needs FaceID weights)",
                                    file_count="single", file_types=["image"])
                fidelity = gr.Slider(0, 1, value=0.5, step=0.05, label="Fidelity (1 = follow the input, 0 = re-draw details)")
                tasks = gr.CheckboxGroup(["bfr", "colorize", "inpaint"], value=["bfr"], label="Video tasks")
                with gr.Accordion("Advanced", open=False):
                    steps = gr.Number(label="Steps (empty = default)", value=None, precision=0)
                    seed = gr.Number(label="Seed", value=0, precision=0)
                run, stop = run_and_cancel_buttons("Restore")
            with gr.Column():
                outputs = result_column(with_video=True)
        model_job(run, stop, lambda *a: run_restore(ctx, *a), [photo, video, reference, fidelity, tasks, steps, seed],
                  outputs, "restore")
