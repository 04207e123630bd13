"""Train tab: a DreamBooth-LoRA from uploaded photos, with the loss shown live."""

from __future__ import annotations

import queue
import shutil
import threading

from idgen.errors import IdgenError, ModelNotFoundError

from idgen.app.demo.common import DemoContext, model_job, paths, run_and_cancel_buttons
from idgen.models import resolve_component
from idgen.train.loop import TrainingArgs, run_training
from idgen.train.lora import LoRAOptions, LoRATask


class TrainingCancelled(IdgenError):
    """Raised inside the training loop when the user cancels."""


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


def run_train(ctx: DemoContext, files, instance_prompt, steps, rank, learning_rate):
    """Generator of `(status, loss points, files)`: one update per optimizer step, then the
    LoRA file. Closing the generator (Gradio's cancel) stops the training at the next step."""

    photos = paths(files)
    if not photos:
        raise IdgenError("upload photos of the person to train on (3-20 is typical).")
    if not instance_prompt or not instance_prompt.strip():
        raise IdgenError("give the instance prompt, e.g. 'a photo of sks person'.")
    out = ctx.out_dir("lora")
    data = out / "photos"
    data.mkdir()
    for i, path in enumerate(photos):
        shutil.copy(path, data / f"{i:03d}{str(path)[str(path).rfind('.'):].lower()}")
    base, resolution = _base(ctx)
    options = LoRAOptions(base=base, instance_data=str(data), instance_prompt=instance_prompt, resolution=resolution,
                          rank=int(rank), num_validation_images=1,
                          validation_inference_steps=2 if base.startswith("tiny") else 25)
    args = TrainingArgs(output_dir=str(out / "run"), max_train_steps=int(steps), learning_rate=float(learning_rate),
                        train_batch_size=1, progress=False)
    updates: queue.Queue = queue.Queue()
    cancel = threading.Event()

    def on_step(step, loss):
        if cancel.is_set():
            raise TrainingCancelled("training cancelled by the user.")
        updates.put(("step", step, loss))

    def work():
        try:
            updates.put(("done", run_training(LoRATask(options, args), args, on_step=on_step), None))
        except Exception as e:  # reported in the page by the generator below
            updates.put(("error", e, None))

    thread = threading.Thread(target=work, name="idgen-train-lora", daemon=True)
    thread.start()
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
                weights = a.weights + [str(out / "run" / "summary.json")]
                yield (f"done: {a.steps} steps in {a.seconds:.1f} s, final loss {a.final_loss:.4f}. Load with "
                       "pipe.load_lora_weights(<folder>)."), _frame(points), weights
                return
    finally:
        cancel.set()


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
                run, stop = run_and_cancel_buttons("Train LoRA")
            with gr.Column():
                status = gr.Textbox(label="Status")
                loss = gr.LinePlot(x="step", y="loss", label="Training loss")
                weights = gr.File(label="Download (LoRA weights + summary.json)", file_count="multiple")

        def _run(*args):
            yield from run_train(ctx, *args)

        model_job(run, stop, _run, [files, prompt, steps, rank, learning_rate], [status, loss, weights], "train_lora")
