"""Restore tab: blind face restoration of a damaged photo (restoration ControlNet, optional clean
reference) or video (SVFR: BFR, colorization, inpainting)."""

from __future__ import annotations

import functools
from typing import Optional

from idgen.app.demo.common import (
    DemoContext, Job, enhance_controls, enhance_options, job_status, model_job, optional, paths, photo_or_video, result_column, run_and_cancel_buttons,
    speed_controls, speed_options,
)
from idgen.app.restore import RestoreRequest, run_restore
from idgen.models.recipes import build_restore_pipeline
from idgen.errors import IdgenError


def restore_job(ctx: DemoContext, photo, video, reference, fidelity, tasks, steps, seed, mode="standard",
                fast_paths=False, fast_weights=None, lora=None, lora_scale=1.0, step_cache=0, memory="max", fp8=False,
                enhance="off", enhance_weight=0.5, enhance_blend=1.0, job: Optional[Job] = None):
    """Restore a photo or a video; returns (image or None, video or None, record, files)."""
    if (photo is None) == (video is None):
        raise IdgenError("give either a photo or a video to restore.")
    job = job or Job()
    refs = paths(reference)
    request = RestoreRequest(input=photo or video, reference=refs[0] if refs else None, fidelity=float(fidelity),
                             tasks=tuple(tasks or ()), steps=int(steps) if optional(steps) else None, seed=int(seed),
                             embedded_default=ctx.tiny, **speed_options(mode, fast_paths, fast_weights, lora, lora_scale, step_cache, memory, fp8),
                             **enhance_options(enhance, enhance_weight, enhance_blend))
    kind, with_reference = request.kind, bool(request.reference)
    build = functools.partial(build_restore_pipeline, kind, reference=with_reference, embedded_default=ctx.tiny,
                              offload=request.memory != "max")
    with ctx.pipeline(("restore", kind, with_reference, request.speed_key()), build, job) as pipeline, ctx.results("restore", job) as out:
        record = run_restore(request, out, pipeline=pipeline, progress=job.steps("frames"), cancel=job.token)
    files = [record["output"], str(out / "record.json")]
    if kind == "video":
        return None, record["output"], record, files
    return record["output"], None, record, files


def build_restore_tab(ctx: DemoContext) -> None:
    import gradio as gr  # the demo extra: imported when a page is built, so the CLI and tests import this without it

    with gr.Tab("Restore", id="restore"):
        with gr.Row():
            with gr.Column():
                photo, video = photo_or_video(gr, "Damaged photo")
                reference = gr.File(label="Clean reference photo of the person (photos; optional, needs FaceID weights)",
                                    file_count="single", file_types=["image"])
                fidelity = gr.Slider(0, 1, value=0.5, step=0.05, label="Fidelity (1 = follow the input, 0 = re-draw details)")
                tasks = gr.CheckboxGroup(["bfr", "colorize", "inpaint"], value=["bfr"], label="Video tasks")
                with gr.Accordion("Advanced", open=False):
                    steps = gr.Number(label="Steps (empty = default)", value=None, precision=0)
                    seed = gr.Number(label="Seed", value=0, precision=0)
                speed = speed_controls(gr, ctx, "restore")
                enhance = enhance_controls(gr, "restore")
                run, stop = run_and_cancel_buttons("Restore", "restore")
                status = job_status("restore")
            with gr.Column():
                outputs = result_column(with_video=True)
        model_job(ctx, run, stop, status, restore_job, [photo, video, reference, fidelity, tasks, steps, seed, *speed, *enhance],
                  outputs,
                  "restore")
