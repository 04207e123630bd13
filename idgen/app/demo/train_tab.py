"""Train tab: a DreamBooth-LoRA from uploaded photos, with the loss shown live."""

from __future__ import annotations

import queue
import shutil
import threading
from pathlib import Path
from typing import Optional

from idgen.errors import IdgenError, ModelNotFoundError

from idgen.app.demo.common import DemoContext, Job, model_job, paths, run_and_cancel_buttons
from idgen.models import resolve_component
from idgen.train.loop import TrainingArgs, run_training
from idgen.train.lora import LoRAOptions, LoRATask

#: The status once the Cancel button was pressed.
TRAINING_CANCELLED = "cancelled: the training was stopped; nothing of it was kept."


def _base(ctx: DemoContext) -> tuple[str, int]:
    """The base model and resolution: configured SD1.5, else the tiny default at 32 px."""
    if ctx.tiny:
        return "tiny-sd15", 32

    try:
        return str(resolve_component("sd15").path), 512
    except ModelNotFoundError:
        if ctx.tiny is False:
            raise
        return "tiny-sd15", 32


def run_train(ctx: DemoContext, files, instance_prompt, steps, rank, learning_rate, job: Optional[Job] = None):
    """Generator of `(status, loss points, files)`: one update per optimizer step, then the
    LoRA file. The training runs in a worker thread; cancelling `job`, or closing the generator
    (Gradio's cancel), stops it at its next step, and the worker then removes its folder."""

    photos = paths(files)
    if not photos:
        raise IdgenError("upload photos of the person to train on (3-20 is typical).")
    if not instance_prompt or not instance_prompt.strip():
        raise IdgenError("give the instance prompt, e.g. 'a photo of sks person'.")
    job = job or Job()
    base, resolution = _base(ctx)
    updates: queue.Queue = queue.Queue()

    def on_step(step, loss):
        job.token.check()
        updates.put(("step", step, loss))

    def work():
        try:
            with ctx.results("lora", job) as out:
                options = LoRAOptions(base=base, instance_data=str(_copy_photos(photos, out / "photos")),
                                      instance_prompt=instance_prompt, resolution=resolution, rank=int(rank),
                                      num_validation_images=1,
                                      validation_inference_steps=2 if base.startswith("tiny") else 25)
                args = TrainingArgs(output_dir=str(out / "run"), max_train_steps=int(steps),
                                    learning_rate=float(learning_rate), train_batch_size=1, progress=False)
                summary = run_training(LoRATask(options, args), args, on_step=on_step)
            updates.put(("done", summary, out))
        except Exception as e:  # reported in the page by the generator below
            updates.put(("error", e, None))

    threading.Thread(target=work, name="idgen-train-lora", daemon=True).start()
    points = []
    try:
        while True:
            kind, a, b = updates.get()
            if kind == "step":
                points.append({"step": a, "loss": b})
                yield f"step {a}/{int(steps)}: loss {b:.4f} (base {base})", _frame(points), None
            elif kind == "error":
                raise a
            else:
                weights = a.weights + [str(b / "run" / "summary.json")]
                yield (f"done: {a.steps} steps in {a.seconds:.1f} s, final loss {a.final_loss:.4f}. Load with "
                       "pipe.load_lora_weights(<folder>)."), _frame(points), weights
                return
    finally:
        job.token.cancel()  # never waits here: Gradio may close the generator on its event loop


def _copy_photos(photos: list[str], folder: Path) -> Path:
    """The training photos, copied into the job's own `folder` as 000.jpg, 001.png, ..."""
    folder.mkdir()
    for i, path in enumerate(photos):
        shutil.copy(path, folder / f"{i:03d}{Path(path).suffix.lower()}")
    return folder


def _frame(points):
    import pandas as pd  # gradio's dependency: the demo extra

    return pd.DataFrame(points, columns=["step", "loss"])


def build_train_tab(ctx: DemoContext) -> None:
    import gradio as gr  # the demo extra: imported when a page is built, so the CLI and tests import this without it

    with gr.Tab("Train", id="train"):
        with gr.Row():
            with gr.Column():
                files = gr.File(label="Photos of the person", file_count="multiple", file_types=["image"])
                prompt = gr.Textbox(label="Instance prompt", value="a photo of sks person")
                with gr.Accordion("Advanced", open=False):
                    steps = gr.Slider(1, 2000, value=20, step=1, label="Steps")
                    rank = gr.Slider(1, 128, value=8, step=1, label="LoRA rank")
                    learning_rate = gr.Number(label="Learning rate", value=1e-4)
                run, stop = run_and_cancel_buttons("Train LoRA", "train")
            with gr.Column():
                status = gr.Textbox(label="Status", elem_id="train-status")
                loss = gr.LinePlot(x="step", y="loss", label="Training loss")
                weights = gr.File(label="Download (LoRA weights + summary.json)", file_count="multiple")

        model_job(ctx, run, stop, status, run_train,
                  [files, prompt, steps, rank, learning_rate], [status, loss, weights], "train_lora",
                  cancelled=TRAINING_CANCELLED)
