"""What every demo tab shares: the app's own temp folder (a results folder per page session),
built pipelines (cached, one build per method, one job at a time on each), readable errors
without server paths, progress reporting, and model jobs that Cancel really stops."""

# No `from __future__ import annotations`: Gradio finds a handler's `gr.Request` parameter by its
# evaluated annotation.
import asyncio
import contextlib
import functools
import hashlib
import inspect
import logging
import re
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from idgen.errors import IdgenError, ModelNotFoundError
from idgen.jobs import CancelToken, JobCancelled
from idgen.models import methods
from idgen.app.enhance_options import enhance_value
from idgen.models.methods import ENHANCE_RESTORERS, ENHANCE_WEIGHTED
from idgen.models import any_configured, load_config

logger = logging.getLogger(__name__)

#: Example photos shipped in the repository (absent from a wheel install: examples are then hidden).
ASSETS = Path(__file__).resolve().parents[2] / "assets" / "faces"
#: Upload limit per file (Gradio refuses larger uploads before they reach a handler). The pixel
#: limit is `idgen.image_io.load_image`'s (IDGEN_MAX_IMAGE_PIXELS), applied to every photo read.
MAX_FILE_SIZE = "20mb"
#: The queue group of every event that runs a model (see `model_job`).
MODEL_QUEUE = "models"
#: The session of jobs run outside a page (tests and scripts calling the handlers directly).
LOCAL_SESSION = "local"
#: What a tab's status shows once its Cancel button was pressed.
CANCELLED = "**Cancelled**: the job was stopped; nothing of it was kept."
#: The folders of an absolute path in a message (its base name, what follows, is kept).
_FOLDERS = re.compile(r"(?<![\w.:/~-])/(?:[^/\s'\"]+/)+(?=[^/\s'\"()\[\],;:])")

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

    return {**{f"generate {m}": names for m, names in methods.GENERATION_WEIGHTS.items()},
            **{f"inpaint/swap {m}": names for m, names in methods.EDIT_WEIGHTS.items()},
            # as `recipes.build_restore_pipeline` decides: by the restoration weights, not the base
            **{f"restore {kind}": names[1:] for kind, names in methods.RESTORE_WEIGHTS.items()},
            **{f"face post-pass {m}": names for m, names in methods.ENHANCE_WEIGHTS.items()},
            "train LoRA": ("sd15",)}


@dataclass
class Job:
    """One model job: the page session it belongs to (whose results folder it writes to), the tab
    that runs it (`name`), its cancel flag, and its progress bar (a `gr.Progress`, or any
    `callable(value, desc=...)`)."""

    session: str = LOCAL_SESSION
    name: str = ""
    token: CancelToken = field(default_factory=CancelToken)
    progress: Optional[Callable] = None

    def steps(self, label: str) -> Callable[[int, Optional[int]], None]:
        """A `(done, total)` callback for the pipelines (called at each denoising step, face or
        frame): advances the progress bar, and raises `JobCancelled` once the job is cancelled."""
        def report(done: int, total: Optional[int]) -> None:
            self.token.check()
            if self.progress is not None:
                self.progress((done, total), desc=label)
        return report

    def acquire(self, lock: threading.Lock) -> None:
        """Take `lock` (a pipeline's), showing that the job waits while another job holds it;
        cancelling the job ends the wait."""
        if lock.acquire(blocking=False):
            return
        if self.progress is not None:
            self.progress(0.0, desc="waiting for another job to finish with this model")
        while not lock.acquire(timeout=0.1):
            self.token.check()


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
        self._pipelines: dict[tuple, tuple[tuple, threading.Lock]] = {}
        self._build_lock = threading.Lock()
        self._jobs: list[Job] = []
        self._jobs_lock = threading.Lock()

    def session_folder(self, session: str) -> Path:
        """The results folder of one page session, named by a digest of its id (a value the
        client sends: never part of a path as it is)."""
        return self.root / "results" / hashlib.sha256(session.encode()).hexdigest()[:16]

    @contextlib.contextmanager
    def results(self, kind: str, job: Job) -> Iterator[Path]:
        """A fresh folder in `job`'s session folder for one job's results; removed, with all it
        holds, when the job fails or is cancelled."""
        path = self.session_folder(job.session) / f"{kind}-{uuid.uuid4().hex[:10]}"
        path.mkdir(parents=True)
        try:
            yield path
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise

    @contextlib.contextmanager
    def pipeline(self, key: tuple, build: Callable[[], tuple], job: Job) -> Iterator[tuple]:
        """`(pipeline, is_embedded_default)` for `key` (a method and its weights), built once and
        held by `job` alone for the block: no two jobs step one pipeline (and its scheduler) at
        once; a second one waits (`Job.acquire`)."""
        with self._build_lock:
            if key not in self._pipelines:
                self._evict_siblings(key)
                self._pipelines[key] = (build(), threading.Lock())
            built, lock = self._pipelines[key]
        job.acquire(lock)
        try:
            job.token.check()
            yield built
        finally:
            lock.release()

    def _evict_siblings(self, key: tuple) -> None:
        """Drop the idle pipelines built for the same tab and method as `key` with other speed or
        memory options (the user switched mode: the old one would only hold memory). A pipeline a
        job is using stays."""
        for other in [k for k in self._pipelines if k[:2] == key[:2] and k != key]:
            lock = self._pipelines[other][1]
            if lock.acquire(blocking=False):
                del self._pipelines[other]
                lock.release()

    def lora_files(self, session: str) -> list[str]:
        """LoRA files the pickers offer: `$IDGEN_HOME/loras/` (few-step and user LoRAs) and the
        LoRAs trained in this session's Train tab."""
        from idgen.models.config import idgen_home
        from idgen.models.loras import lora_files

        return lora_files([idgen_home() / "loras", self.session_folder(session)])

    @contextlib.contextmanager
    def job(self, session: str, name: str, progress=None) -> Iterator[Job]:
        """A job of tab `name` for page session `session`, which `cancel` reaches while the block runs."""
        job = Job(session=session, name=name, progress=progress)
        with self._jobs_lock:
            self._jobs.append(job)
        try:
            yield job
        finally:
            with self._jobs_lock:
                self._jobs.remove(job)

    def running(self) -> list[Job]:
        """The jobs running now, all sessions."""
        with self._jobs_lock:
            return list(self._jobs)

    def cancel(self, session: str, name: str) -> int:
        """Cancel the running jobs of tab `name` of page session `session`; returns their number.
        Each stops at its next step (denoising step, frame or training step)."""
        jobs = [job for job in self.running() if (job.session, job.name) == (session, name)]
        for job in jobs:
            job.token.cancel()
        return len(jobs)

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


def without_paths(message: str) -> str:
    """`message` with each absolute path cut to its base name: the page is told which file, not
    where the server keeps it (uploads, results, models)."""
    return _FOLDERS.sub("", message)


def friendly(fn):
    """Turn idgen's errors into a readable message in the page (`gr.Error`), never a traceback
    nor a server path."""
    import gradio as gr  # the demo extra: imported when a page is built, so the CLI and tests import this without it

    def readable(e: Exception) -> Exception:
        if isinstance(e, gr.Error):
            return e
        if isinstance(e, JobCancelled):
            return gr.Error(without_paths(str(e)), title="Cancelled", print_exception=False)
        if isinstance(e, ModelNotFoundError):
            return gr.Error(f"Missing model: {without_paths(str(e))} (the Models tab shows where to put it)")
        if isinstance(e, IdgenError):
            return gr.Error(without_paths(str(e)))
        logger.error("demo handler %s failed", fn.__name__, exc_info=e)  # details in the log only
        first = str(e).splitlines()[0] if str(e) else ""
        return gr.Error(f"Unexpected error ({type(e).__name__}): {without_paths(first)}")

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


def photo_or_video(gr, photo_label: str):
    """A photo input and a video input side by side (one of them is used); returns both."""
    with gr.Row():
        photo = gr.Image(label=photo_label, type="filepath")
        video = gr.Video(label="or video (audio is kept)")
    return photo, video


def sampling_controls(gr, steps_label: str = "Steps (empty = default)", steps_id: Optional[str] = None):
    """The steps, CFG scale and seed inputs, in one row; returns the three."""
    with gr.Row():
        steps = gr.Number(label=steps_label, value=None, precision=0, elem_id=steps_id)
        guidance = gr.Number(label="CFG scale (empty = default)", value=None)
        seed = gr.Number(label="Seed", value=0, precision=0)
    return steps, guidance, seed


#: The demo's mode selector: the plain path or a few-step preset.
MODES = ("standard", "lcm", "lightning", "hyper-sd", "tcd")


def speed_controls(gr, ctx: "DemoContext", prefix: str) -> list:
    """The "Speed and memory" accordion of a tab: mode (standard or a few-step preset), the
    preset's weights and a LoRA (pickers over `ctx.lora_files`, with a refresh button; a path may
    be typed), the LoRA's scale, fast paths, step caching and the memory mode. Returns the inputs
    in the order `speed_options` takes them."""
    with gr.Accordion("Speed and memory", open=False, elem_id=f"{prefix}-speed"):
        with gr.Row():
            mode = gr.Radio(list(MODES), value="standard", label="Mode (few-step presets need their weights)",
                            elem_id=f"{prefix}-mode")
            fast_paths = gr.Checkbox(False, label="Fast paths (fused attention, bf16, compile on GPU)")
        with gr.Row():
            weights = gr.Dropdown([], value=None, allow_custom_value=True, label="Few-step weights (LoRA / UNet file)",
                                  elem_id=f"{prefix}-fast-weights")
            lora = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True,
                               label="LoRAs (e.g. trained in the Train tab; several add up)", elem_id=f"{prefix}-lora")
            lora_scale = gr.Number(1.0, label="LoRA scale (each)")
            refresh = gr.Button("Refresh LoRA list", size="sm")
        with gr.Row():
            step_cache = gr.Number(0, precision=0, label="Step cache: full UNet step every N (0 = off)")
            memory = gr.Radio(["max", "balanced", "low"], value="max", label="Memory")
            fp8 = gr.Checkbox(False, label="fp8 weights (lossy)")

    def _refresh(request: gr.Request):
        files = ctx.lora_files(session_of(request))
        return gr.update(choices=files), gr.update(choices=files)

    refresh.click(_refresh, None, [weights, lora], api_name=False, queue=False)
    return [mode, fast_paths, weights, lora, lora_scale, step_cache, memory, fp8]


def enhance_controls(gr, prefix: str) -> list:
    """The "Face post-pass" accordion of a tab: the restorer (off, CodeFormer, GFPGAN, RestoreFormer++;
    the official files, see the Models tab), CodeFormer's fidelity and the blend. Returns the inputs
    in the order `enhance_options` takes them."""
    with gr.Accordion("Face post-pass (restore every face of the result)", open=False, elem_id=f"{prefix}-enhance"):
        with gr.Row():
            restorer = gr.Dropdown(["off", *ENHANCE_RESTORERS], value="off", label="Restorer",
                                   elem_id=f"{prefix}-enhance-restorer")
            weight = gr.Slider(0, 1, value=0.5, step=0.05, label="CodeFormer fidelity (0 = codebook face, 1 = the input)")
            blend = gr.Slider(0, 1, value=1.0, step=0.05, label="Blend (1 = the restored face)")
    return [restorer, weight, blend]


def enhance_options(restorer, weight, blend) -> dict:
    """The `RunOptions` post-pass fields from the values of `enhance_controls`."""
    if optional(restorer) in (None, "off"):
        return {"enhance": None}
    takes_weight = restorer in ENHANCE_WEIGHTED and optional(weight) is not None
    return {"enhance": enhance_value(restorer, float(weight) if takes_weight else None),
            "enhance_blend": 1.0 if optional(blend) is None else float(blend)}


def _lora_paths(lora) -> list[str]:
    """The LoRA picker's value (a list, one path, or nothing) as a list of paths."""
    if isinstance(lora, (list, tuple)):
        return [p for p in (optional(v) for v in lora) if p]
    return [optional(lora)] if optional(lora) else []


def speed_options(mode, fast_paths, weights, lora, lora_scale, step_cache, memory, fp8) -> dict:
    """The `SpeedOptions` fields from the values of `speed_controls` (`lora`: one path or a list,
    each at `lora_scale`)."""
    scale = 1.0 if optional(lora_scale) is None else float(lora_scale)
    if mode not in MODES:
        raise IdgenError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")
    preset = None if mode == "standard" else mode
    if preset is not None and not optional(weights):
        raise IdgenError(f"the {mode} mode needs its weights: pick or type the file under 'Few-step weights'.")
    return {"speed": "fast" if fast_paths else "default", "fast": preset,
            "fast_weights": optional(weights) if preset else None,
            "loras": tuple((path, scale) for path in _lora_paths(lora)),
            "step_cache": int(optional(step_cache) or 0), "memory": memory or "max", "fp8": bool(fp8)}


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


def run_and_cancel_buttons(label: str, prefix: str) -> tuple:
    """The primary action button and its Cancel button, side by side (elem_ids `<prefix>-run`
    and `<prefix>-cancel`)."""
    import gradio as gr  # the demo extra: imported when a page is built, so the CLI and tests import this without it

    with gr.Row():
        return (gr.Button(label, variant="primary", elem_id=f"{prefix}-run"),
                gr.Button("Cancel", elem_id=f"{prefix}-cancel"))


def job_status(prefix: str):
    """The line under a tab's buttons where Cancel says the job was cancelled (elem_id `<prefix>-status`)."""
    import gradio as gr  # the demo extra: imported when a page is built, so the CLI and tests import this without it

    return gr.Markdown("", elem_id=f"{prefix}-status")


#: What `next` gives once a generator job has no more updates.
_END = object()


def session_of(request) -> str:
    """The page session of a Gradio request (each browser tab and each API client has its own)."""
    return getattr(request, "session_hash", None) or LOCAL_SESSION


async def _in_worker(call: Callable, job: Job):
    """`call()` in a worker thread. When Gradio cancels the event (the page's Cancel, an API
    client's `job.cancel()`), cancel `job` too and wait for the worker to stop (within a step),
    so the job holds its queue slot until its pipeline is free again."""
    worker = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        return await asyncio.shield(worker)
    except asyncio.CancelledError:
        job.token.cancel()
        with contextlib.suppress(Exception):
            await worker
        raise


def model_job(ctx: DemoContext, run, stop, status, fn: Callable, inputs: list, outputs: list, api_name: str,
              cancelled: str = CANCELLED):
    """Wire button `run` to the model job `fn(ctx, *inputs, job=Job)` (errors made readable) and
    `stop` to cancel it (then `status` shows `cancelled`).

    `fn` runs in a worker thread (a generator `fn` streams its updates, each computed in a worker
    thread) and passes its `Job`'s callbacks (`job.steps(...)`, `job.token`) to the pipelines,
    which check them at each step. Cancel works twice over: `stop`'s own handler runs outside the
    queue, so while the job runs, and cancels this tab's job of the session; Gradio's cancel of
    the event (the page's, or an API client's) cancels it as well (see `_in_worker`).

    Every event that runs a model joins one queue group (`MODEL_QUEUE`), so the queue's
    concurrency limit caps model jobs across all tabs (a generation and a training never load two
    models' activations at once); the others wait in line with their position shown.
    """
    import gradio as gr  # the demo extra: imported when a page is built, so the CLI and tests import this without it

    work = friendly(fn)
    if inspect.isgeneratorfunction(fn):
        async def handler(request: gr.Request, *args):
            with ctx.job(session_of(request), api_name) as job:
                updates = work(ctx, *args, job=job)
                try:
                    while (update := await _in_worker(functools.partial(next, updates, _END), job)) is not _END:
                        yield update
                finally:
                    updates.close()
    else:
        # Gradio passes the request and the progress bar by position, before the inputs
        async def handler(request: gr.Request, progress=gr.Progress(), *args):
            with ctx.job(session_of(request), api_name, progress) as job:
                return await _in_worker(functools.partial(work, ctx, *args, job=job), job)

    def cancel(request: gr.Request) -> str:
        ctx.cancel(session_of(request), api_name)
        return cancelled

    run.click(lambda: "", None, status, queue=False, api_name=False)
    event = run.click(handler, inputs, outputs, api_name=api_name, concurrency_id=MODEL_QUEUE)
    stop.click(cancel, None, status, queue=False, cancels=[event], api_name=False)
    return event
