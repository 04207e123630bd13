"""What every demo tab shares: the app's own temp folder, built pipelines (cached, one build per
method), readable errors, and progress reporting."""

from __future__ import annotations

import functools
import inspect
import logging
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Callable, Optional

from idgen.errors import IdgenError, ModelNotFoundError
from idgen.models import recipes
from idgen.models import any_configured, load_config

logger = logging.getLogger(__name__)

#: Example photos shipped in the repository (absent from a wheel install: examples are then hidden).
ASSETS = Path(__file__).resolve().parents[2] / "assets" / "faces"
#: Upload limit per file (Gradio refuses larger uploads before they reach a handler). The pixel
#: limit is `idgen.image_io.load_image`'s (IDGEN_MAX_IMAGE_PIXELS), applied to every photo read.
MAX_FILE_SIZE = "20mb"
#: The queue group of every event that runs a model (see `model_job`).
MODEL_QUEUE = "models"

TINY_BANNER = (
    "**Running on the tiny embedded default**: no weights are configured, so the models are random-weight "
    "miniatures and the images are noise. Face detection, alignment, keypoints, masks, tracking and the "
    "pipelines are the real ones. See the **Models** tab for where to put real weights."
)
PARTIAL_BANNER = (
    "**Part of the demo runs on the tiny embedded default** (random-weight miniatures, noise images): {names}. "
    "None of their weights are configured; the rest uses your weights. See the **Models** tab."
)


def capabilities() -> dict[str, tuple[str, ...]]:
    """Each capability of the demo and the registry components whose presence decides, by the
    CLI's rule (`idgen.models.build_or_embedded`), whether it runs on real weights."""

    return {**{f"generate {m}": names for m, names in recipes.GENERATION_WEIGHTS.items()},
            **{f"inpaint/swap {m}": names for m, names in recipes.EDIT_WEIGHTS.items()},
            # as `recipes.build_restore_pipeline` decides: by the restoration weights, not the base
            **{f"restore {kind}": names[1:] for kind, names in recipes.RESTORE_WEIGHTS.items()},
            "train LoRA": ("sd15",)}


class DemoContext:
    """State of one running demo.

    Args:
        tiny: force the tiny embedded default (True), forbid it (False), or use it only when no
            weights are configured (None, the CLI's rule).
        root: the app's own temp folder; uploads are processed and results written only under it.
    """

    def __init__(self, tiny: Optional[bool] = None, root: Optional[Path] = None):
        self.tiny = tiny
        self.root = Path(root or tempfile.mkdtemp(prefix="idgen-demo-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self._pipelines: dict[tuple, tuple] = {}
        self._lock = threading.Lock()

    def out_dir(self, kind: str) -> Path:
        """A fresh folder for one request's results."""
        path = self.root / "results" / f"{kind}-{uuid.uuid4().hex[:10]}"
        path.mkdir(parents=True)
        return path

    def pipeline(self, key: tuple, build: Callable[[], tuple]) -> tuple:
        """`(pipeline, is_embedded_default)` built once per `key` (a method and its weights)."""
        with self._lock:
            if key not in self._pipelines:
                self._pipelines[key] = build()
            return self._pipelines[key]

    def embedded_capabilities(self) -> list[str]:
        """The capabilities (keys of `capabilities()`) that run on the tiny embedded default: all
        when forced, none when forbidden, else those with none of their weights configured."""
        if self.tiny:
            return list(capabilities())
        if self.tiny is False:
            return []

        config = load_config()
        return [name for name, needs in capabilities().items() if not any_configured(needs, config)]

    def banner(self) -> Optional[str]:
        """The page's banner about the embedded default (None when every capability has weights)."""
        tiny = self.embedded_capabilities()
        if not tiny:
            return None
        return TINY_BANNER if len(tiny) == len(capabilities()) else PARTIAL_BANNER.format(names=", ".join(tiny))


def friendly(fn):
    """Turn idgen's errors into a readable message in the page (`gr.Error`), never a traceback."""
    import gradio as gr  # the demo extra: imported when a page is built, so the CLI and tests import this without it

    def readable(e: Exception) -> Exception:
        if isinstance(e, gr.Error):
            return e
        if isinstance(e, ModelNotFoundError):
            return gr.Error(f"Missing model: {e}")
        if isinstance(e, IdgenError):
            return gr.Error(str(e))
        logger.error("demo handler %s failed", fn.__name__, exc_info=e)  # details in the log only
        return gr.Error(f"Unexpected error ({type(e).__name__}): {str(e).splitlines()[0] if str(e) else ''}")

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:
                raise readable(e) from None
        return generator

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise readable(e) from None

    return wrapper


def paths(files) -> list[str]:
    """Gradio file values (paths, file objects or dicts) as a list of paths."""
    if files is None:
        return []
    items = files if isinstance(files, (list, tuple)) else [files]
    out = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("path") or item.get("name")
        out.append(str(getattr(item, "name", item)))
    return out


def step_progress(progress, label: str) -> Callable[[int, int], None]:
    """A `(step, total)` callback driving a `gr.Progress` bar."""
    def report(step: int, total: int) -> None:
        if progress is not None:
            progress((step, total), desc=label)
    return report


def photo_or_video(gr, photo_label: str):
    """A photo input and a video input side by side (one of them is used); returns both."""
    with gr.Row():
        photo = gr.Image(label=photo_label, type="filepath")
        video = gr.Video(label="or video (audio is kept)")
    return photo, video


def sampling_controls(gr, steps_label: str = "Steps (empty = default)"):
    """The steps, CFG scale and seed inputs, in one row; returns the three."""
    with gr.Row():
        steps = gr.Number(label=steps_label, value=None, precision=0)
        guidance = gr.Number(label="CFG scale (empty = default)", value=None)
        seed = gr.Number(label="Seed", value=0, precision=0)
    return steps, guidance, seed


def show_notes(notes) -> None:
    """Each note of a job's record (faces skipped, mask partly ignored, ...) as a toast in the page."""
    import gradio as gr  # the demo extra: imported when a page is built, so the CLI and tests import this without it

    for note in notes:
        if note:
            gr.Warning(note)


def optional(value):
    """Gradio's empty numbers/strings as None."""
    return None if value in ("", None) else value


def result_column(with_video: bool = False) -> list:
    """The output side of an editing tab: the result image (and video), its parameters as JSON,
    and the downloadable files. Call inside a `gr.Column`."""
    import gradio as gr  # the demo extra: imported when a page is built, so the CLI and tests import this without it

    outputs = [gr.Image(label="Result", type="filepath")]
    if with_video:
        outputs.append(gr.Video(label="Result video"))
    return outputs + [gr.JSON(label="Parameters"), gr.File(label="Download", file_count="multiple")]


def run_and_cancel_buttons(label: str, elem_id: Optional[str] = None) -> tuple:
    """The primary action button and its Cancel button, side by side."""
    import gradio as gr  # the demo extra: imported when a page is built, so the CLI and tests import this without it

    with gr.Row():
        return gr.Button(label, variant="primary", elem_id=elem_id), gr.Button("Cancel")


def model_job(run, stop, fn: Callable, inputs: list, outputs: list, api_name: str):
    """Wire button `run` to `fn` (errors made readable) and `stop` to cancel it.

    Every event that runs a model joins one queue group (`MODEL_QUEUE`), so the queue's
    concurrency limit caps model jobs across all tabs (a generation and a training never load
    two models' activations at once); the others wait in line with their position shown.
    """
    event = run.click(friendly(fn), inputs, outputs, api_name=api_name, concurrency_id=MODEL_QUEUE)
    stop.click(None, cancels=[event], api_name=False)
    return event
