"""The Gradio demo, in-process: every endpoint through `gradio_client` on the tiny models, errors
as readable messages, the banner, the queue, the handlers behind each tab, Cancel (which stops the
job within a step and keeps nothing), one job at a time per pipeline, a results folder per page
session, and `idgen demo`'s address checks."""

import contextlib
import functools
import json
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402

from idgen.app.cli import main  # noqa: E402
from idgen.app.demo import DemoContext, app as demo_app, launch  # noqa: E402
from idgen.app.demo.common import (  # noqa: E402
    CANCELLED, LOCAL_SESSION, MODEL_QUEUE, Job, capabilities, friendly, without_paths,
)
from idgen.acceleration.options import SpeedOptions  # noqa: E402
from idgen.app.demo.generate_tab import pick_face, run_generate  # noqa: E402
from idgen.app.demo.edit_tab import editor_photo_and_mask, run_inpaint, run_swap  # noqa: E402
from idgen.app.demo.restore_tab import restore_job  # noqa: E402
from idgen.app.demo.train_tab import TRAINING_CANCELLED, run_train  # noqa: E402
from idgen.errors import IdgenError  # noqa: E402
from idgen.jobs import JobCancelled  # noqa: E402
from idgen.models.recipes import build_edit_pipeline, build_generation_pipeline  # noqa: E402

from conftest import SHARED  # noqa: E402
from demo_requests import FACE, generate_args  # noqa: E402

OTHER = str(SHARED / "faces" / "portrait_smile.jpg")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    ctx = DemoContext(tiny=True, root=tmp_path_factory.mktemp("demo"))
    port = free_port()
    app = launch(port=port, ctx=ctx, prevent_thread_lock=True, quiet=True)
    app.test_url = f"http://127.0.0.1:{port}/"
    yield ctx, app, Client(app.test_url, verbose=False)
    app.close()


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def press(app, elem_id: str, session: str) -> list:
    """Press button `elem_id` as the page of `session` does (a call outside the queue); returns
    what its handler sent back."""
    import httpx

    index = next(i for i, fn in app.fns.items()
                 if fn.fn is not None and any(app.blocks[target[0]].elem_id == elem_id for target in fn.targets))
    reply = httpx.post(app.test_url + "gradio_api/run/predict",
                       json={"data": [], "fn_index": index, "session_hash": session}, timeout=60)
    reply.raise_for_status()
    return reply.json()["data"]


@contextlib.contextmanager
def unet_calls(ctx, key=("generate", "faceid", (False, (), False), SpeedOptions().speed_key()), build=None):
    """A list that gains a time stamp at each UNet forward of the demo's cached pipeline `key`."""
    build = build or functools.partial(build_generation_pipeline, key[1], embedded_default=True)
    with ctx.pipeline(key, build, Job()) as (pipe, _):
        calls = []
        handle = pipe.unet.register_forward_hook(lambda *_: calls.append(time.monotonic()))
    try:
        yield calls
    finally:
        handle.remove()


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


#: The "Speed and memory" inputs every model endpoint ends with, at their defaults.
SPEED_DEFAULTS = ["standard", False, None, None, 1.0, 0, "max", False]


@pytest.mark.parametrize("method", ["instantid", "faceid", "arc2face"])
def test_generate_endpoint(served, method):
    ctx, _, client = served
    images, record, files = client.predict(*generate_args(method), api_name="/generate")
    assert len(images) == 1 and record["embedded_default"] is True and record["request"]["seed"] == 3
    # the pipeline's default size: the tiny UNet's native 64 px; InstantID sizes from the (square) face
    # photo by the official rule, long side 5/4 of native (1280 at SDXL's 1024)
    side = 80 if method == "instantid" else 64
    assert Image.open(images[0]["image"]).size == (side, side)
    assert any(f.endswith("record.json") for f in files)


def test_generate_knobs_scheduler_face_index_and_window(served):
    _, _, client = served
    _, record, _ = client.predict(*generate_args("faceid", scheduler="Euler", face_index=0, identity_start=0.5,
                                                 num_images=2), api_name="/generate")
    assert record["scheduler"] == "EulerDiscreteScheduler" and len(record["files"]) == 2
    assert (record["request"]["identity_start"], record["request"]["identity_end"]) == (0.5, 1.0)


def test_errors_are_readable_messages(served, tmp_path):
    _, _, client = served
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(flat)
    with pytest.raises(Exception) as err:
        client.predict(*generate_args(photo=str(flat)), api_name="/generate")
    assert "no face was detected" in str(err.value) and "Traceback" not in str(err.value)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    with pytest.raises(Exception) as err:
        client.predict(*generate_args(photo=str(corrupt)), api_name="/generate")
    assert "could not be decoded" in str(err.value)
    # the upload's name, not where the server keeps it
    assert "'corrupt.png'" in str(err.value) and not re.search(r"(^|[\s'\"(])/\S", str(err.value))
    with pytest.raises(Exception) as err:
        client.predict(*generate_args("arc2face", identity_start=0.5), api_name="/generate")
    assert "Arc2Face has no identity scale or window" in str(err.value)


def test_face_picker_shows_each_face_and_the_reason_for_none(served, tmp_path):
    _, _, client = served
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(flat)
    items = client.predict([handle_file(FACE), handle_file(str(flat))], api_name="/detect_faces")
    assert [item["caption"] for item in items] == ["portrait_glasses.jpg: face 0 of 1",
                                                   "flat.png: no face was detected in the image."]
    thumb = np.asarray(Image.open(items[0]["image"]).convert("RGB"))
    photo = np.asarray(Image.open(FACE).convert("RGB"))
    assert thumb.shape[0] < photo.shape[0] and thumb.shape[1] < photo.shape[1]  # the face, not the photo
    assert (thumb == [0, 0, 255]).all(-1).any()  # the keypoints, in the official colours (nose: blue)
    assert client.predict(None, api_name="/detect_faces") == []  # cleared upload: nothing, no error
    # a click on gallery item i picks its face index; a photo without faces picks nothing
    assert pick_face([0, 1, None], 1) == 1 and pick_face([0, 1, None], 2) is None and pick_face([], 0) is None


def test_swap_endpoint(served):
    _, _, client = served
    image, video, record, files = client.predict(
        handle_file(FACE), None, [handle_file(OTHER)], None, "all", None, "pva", "photo of a person",
        2, None, 0, None, 1.0, 8, 8, "face", *SPEED_DEFAULTS, api_name="/swap")
    assert video is None and record["faces"][0]["source"] == 0
    assert np.any(np.asarray(Image.open(image).convert("RGB")) != np.asarray(Image.open(FACE).convert("RGB")))
    with pytest.raises(Exception, match="either a photo or a video"):
        client.predict(None, None, [handle_file(OTHER)], None, "all", None, "pva", "p", 2, None, 0, None, 1.0, 8, 8,
                       "face", *SPEED_DEFAULTS, api_name="/swap")


def test_restore_endpoint_photo_and_video(served, tmp_path):
    from test_video import face_frames, make_video

    _, _, client = served
    image, video, record, files = client.predict(handle_file(FACE), None, None, 0.7, ["bfr"], 2, 0, *SPEED_DEFAULTS,
                                                 api_name="/restore")
    assert video is None and record["faces"][0]["restored"] and record["parameters"]["fidelity"] == 0.7
    clip = make_video(tmp_path / "clip.mp4", face_frames(3, blank=()))
    image, video, record, files = client.predict(None, handle_file(str(clip)), None, 0.5, ["bfr", "colorize"], 2,
                                                 0, *SPEED_DEFAULTS, api_name="/restore")
    assert image is None and record["video"]["tracks"] == 1 and record["parameters"]["tasks"] == ["bfr", "colorize"]
    with pytest.raises(Exception, match="either a photo or a video"):
        client.predict(None, None, None, 0.5, ["bfr"], 2, 0, *SPEED_DEFAULTS, api_name="/restore")
    image, _, record, _ = client.predict(handle_file(FACE), None, handle_file(OTHER), 0.5, ["bfr"], 2, 0,
                                         *SPEED_DEFAULTS, api_name="/restore")
    assert record["faces"][0]["restored"] and record["request"]["reference"]
    # the face post-pass section (tiny restorer on the embedded default)
    _, _, record, _ = client.predict(handle_file(FACE), None, None, 0.5, ["bfr"], 2, 0, *SPEED_DEFAULTS,
                                     "codeformer", 0.3, 0.9, api_name="/restore")
    assert record["enhance"]["restorer"] == "codeformer:0.3" and record["enhance"]["blend"] == 0.9
    assert record["request"]["enhance"] == "codeformer:0.3"


def test_models_endpoint_and_banner(served):
    _, app, client = served
    table, text = client.predict(api_name="/models")
    assert "sd15" in [row[0] for row in table["data"]] and "idgen" in text
    config = json.dumps(app.config, default=str)
    assert "tiny embedded default" in config


def test_queue_has_a_concurrency_limit(served):
    _, app, _ = served
    heavy = [fn for fn in app.fns.values() if fn.api_name in ("generate", "inpaint", "swap", "restore", "train_lora")]
    # one group for every model job: the limit holds across tabs, not per button
    assert len(heavy) == 5 and all(fn.concurrency_id == MODEL_QUEUE for fn in heavy)
    assert all(fn.concurrency_limit == "default" for fn in heavy)
    assert app._queue.default_concurrency_limit == 1 and app._queue.max_size == 16


def test_files_are_served_only_from_the_apps_folder_and_uploads_are_limited(served, tmp_path):
    import httpx

    ctx, app, client = served
    client.predict(*generate_args("faceid"), api_name="/generate")
    served_result = next(ctx.root.glob("results/*/faceid-*/record.json"))
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the web")
    base = app.test_url + "gradio_api/file="
    with httpx.Client() as http:
        assert http.get(base + str(served_result)).status_code == 200
        for path in (outside, Path(__file__), Path("/etc/hostname")):
            assert http.get(base + str(path)).status_code in (403, 404), path
        big = http.post(app.test_url + "gradio_api/upload", files={"files": ("big.png", b"0" * (21 * 2**20))})
        assert big.status_code == 413


def test_oversized_image_is_refused_before_decoding(served, tmp_path):
    _, _, client = served
    huge = tmp_path / "huge.png"
    Image.new("L", (7000, 6000)).save(huge)  # 42 megapixels in a few hundred kB
    with pytest.raises(Exception, match="above the limit"):
        client.predict(*generate_args(photo=str(huge)), api_name="/generate")


def test_missing_weights_are_a_readable_message(tmp_path, monkeypatch):
    import gradio as gr

    monkeypatch.setenv("IDGEN_HOME", str(tmp_path / "home"))
    ctx = DemoContext(tiny=False, root=tmp_path / "demo")
    with pytest.raises(gr.Error, match="Missing model.*sd15") as err:
        friendly(run_generate)(ctx, "faceid", [FACE], None, None, "p", "", 2, None, 0, None, None, None, None,
                               "default", 1, 0, 1)
    assert "Traceback" not in str(err.value)


def test_banner_follows_the_configured_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("IDGEN_HOME", str(tmp_path / "home"))
    for name in ("sd15", "faceid_sd15"):
        monkeypatch.delenv(f"IDGEN_{name.upper()}", raising=False)
    assert DemoContext(tiny=None, root=tmp_path / "a").embedded_capabilities() == list(capabilities())
    assert "tiny embedded default" in DemoContext(tiny=None, root=tmp_path / "a").banner()
    assert DemoContext(tiny=False, root=tmp_path / "b").banner() is None
    adapter = tmp_path / "ip-adapter-faceid_sd15.bin"
    adapter.write_bytes(b"x")
    monkeypatch.setenv("IDGEN_FACEID_SD15", str(adapter))  # FaceID weights only: the rest stays tiny
    ctx = DemoContext(tiny=None, root=tmp_path / "c")
    tiny = ctx.embedded_capabilities()
    assert "generate faceid" not in tiny and "generate instantid" in tiny and "inpaint/swap faceid" not in tiny
    assert "Part of the demo" in ctx.banner() and "generate arc2face" in ctx.banner()


def test_inpaint_handler_repaints_only_the_painted_area(served, monkeypatch):
    monkeypatch.setenv("IDGEN_PROVENANCE", "0")  # the provenance watermark touches every pixel
    ctx = served[0]
    photo = np.asarray(Image.open(FACE).convert("RGB"))
    layer = np.zeros((*photo.shape[:2], 4), np.uint8)
    layer[260:380, 220:380, 3] = 255
    value = {"background": photo, "layers": [layer], "composite": photo}
    assert editor_photo_and_mask(value)[1].sum() > 0
    path, record, files = run_inpaint(ctx, value, [OTHER], "pva", "photo", 2, None, 0, None, 1.0, 0, 8, "face")
    changed = np.any(np.asarray(Image.open(path)) != photo, axis=-1)
    assert changed.any() and not changed[:240].any() and not changed[400:].any()
    with pytest.raises(IdgenError, match="upload the photo"):
        run_inpaint(ctx, None, [OTHER], "pva", "photo", 2, None, 0, None, 1.0, 0, 8, "face")


def test_inpaint_strokes_outside_the_face_crop_are_reported(served):
    ctx = served[0]
    photo = np.asarray(Image.open(FACE).convert("RGB"))
    layer = np.zeros((*photo.shape[:2], 4), np.uint8)
    layer[260:380, 220:380, 3] = 255  # on the face
    layer[:12, :12, 3] = 255  # a far corner: no face crop reaches it
    value = {"background": photo, "layers": [layer], "composite": photo}
    _, record, _ = run_inpaint(ctx, value, [OTHER], "pva", "photo", 2, None, 0, None, 1.0, 0, 8, "face")
    assert any("outside the face crop" in note for note in record["notes"])
    layer[12:, :, 3] = 0  # only the corner stroke is left
    with pytest.raises(IdgenError, match="does not reach any face"):
        run_inpaint(ctx, value, [OTHER], "pva", "photo", 2, None, 0, None, 1.0, 0, 8, "face")


def test_train_streams_the_loss_and_cancel_stops_it(served):
    ctx, app, client = served
    updates = list(run_train(ctx, [FACE, OTHER], "a photo of sks person", 3, 4, 1e-3))
    assert [len(u[1]) for u in updates] == [1, 2, 3, 3]
    status, _, weights = updates[-1]
    assert status.startswith("done") and any(w.endswith("pytorch_lora_weights.safetensors") for w in weights)

    # Cancel through the server, by an API client and by the page's Cancel button: the worker
    # stops at its next step, its folder is removed, and the page's status says so
    def training():
        return any(t.name == "idgen-train-lora" for t in threading.enumerate())

    folder = ctx.session_folder(client.session_hash)
    for cancel, said in ((lambda job: job.cancel(), True),
                         (lambda job: press(app, "train-cancel", client.session_hash), [TRAINING_CANCELLED])):
        job = client.submit([handle_file(FACE), handle_file(OTHER)], "a photo of sks person", 2000, 4, 1e-3,
                            api_name="/train_lora")
        wait_for(lambda: job.outputs())
        assert job.outputs()[-1][0].startswith("step ") and list(folder.glob("lora-*"))
        assert cancel(job) == said
        wait_for(lambda: not training() and not list(folder.glob("lora-*")), timeout=60)
        assert len(job.outputs()) < 2000
    with pytest.raises(IdgenError, match="upload photos"):
        next(run_train(ctx, [], "a photo of sks person", 3, 4, 1e-3))


def test_cancel_stops_a_running_generation_within_a_step_and_keeps_nothing(served, monkeypatch):
    monkeypatch.setenv("IDGEN_PROVENANCE", "0")  # unwatermarked images: equal for equal jobs
    ctx, _, client = served
    _, reference, _ = client.predict(*generate_args(steps=4), api_name="/generate")
    folder = ctx.session_folder(client.session_hash)
    kept = sorted(folder.iterdir())
    with unet_calls(ctx) as calls:
        job = client.submit(*generate_args(steps=500), api_name="/generate")
        wait_for(lambda: len(calls) >= 3)
        before = len(calls)
        job.cancel()  # an API client's cancel: it returns once the server's worker has stopped
        stopped = len(calls)
        time.sleep(1.0)
        assert len(calls) == stopped and stopped - before <= 2  # the step under way, at most
    assert not ctx.running() and sorted(folder.iterdir()) == kept

    # the next job runs on the same pipeline, and gives what it gave before the cancel
    _, again, _ = client.predict(*generate_args(steps=4), api_name="/generate")
    assert np.array_equal(pixels(again["files"][0]), pixels(reference["files"][0]))


def test_the_cancel_button_stops_the_job_of_its_own_page(served):
    ctx, app, client = served
    job = client.submit(*generate_args(steps=500), api_name="/generate")
    wait_for(lambda: ctx.running())
    assert press(app, "gen-cancel", "another-page") == [CANCELLED]
    time.sleep(0.3)
    assert [j.token.cancelled for j in ctx.running()] == [False]  # another page's Cancel: not this job
    assert press(app, "gen-cancel", client.session_hash) == [CANCELLED]
    with pytest.raises(Exception, match="cancelled by the user"):
        job.result(timeout=60)
    wait_for(lambda: not ctx.running(), timeout=10)


def test_cancel_stops_a_photo_swap_within_a_step(served):
    ctx = served[0]
    job = Job()
    folder = ctx.session_folder(LOCAL_SESSION)
    build = functools.partial(build_edit_pipeline, "pva", embedded_default=True)
    with unet_calls(ctx, ("edit", "pva", SpeedOptions().speed_key()), build) as calls:
        # cancelled during the first denoising step
        with ctx.pipeline(("edit", "pva", SpeedOptions().speed_key()), None, job) as (pipe, _):
            handle = pipe.unet.register_forward_hook(lambda *_: job.token.cancel())
        try:
            with pytest.raises(JobCancelled):
                run_swap(ctx, FACE, None, [OTHER], None, "all", None, "pva", "p", 50, None, 0, None, 1.0, 8, 8, "face",
                         job=job)
        finally:
            handle.remove()
    assert len(calls) == 1 and not list(folder.glob("swap-*"))


def test_cancel_stops_a_video_job_at_the_next_frame(served, tmp_path):
    from test_video import face_frames, make_video

    ctx = served[0]
    clip = make_video(tmp_path / "clip.mp4", face_frames(6, blank=()))
    frames = []

    def progress(value, desc=None):  # the page's progress bar: Cancel pressed at the second frame
        frames.append(value)
        if len(frames) == 2:
            job.token.cancel()

    job = Job(progress=progress)
    with pytest.raises(JobCancelled):
        restore_job(ctx, None, str(clip), None, 0.5, ["bfr"], 2, 0, job=job)
    assert frames == [(1, 6), (2, 6)] and not list(ctx.session_folder(LOCAL_SESSION).glob("restore-*"))


def test_two_jobs_on_one_pipeline_take_turns(tmp_path, monkeypatch):
    monkeypatch.setenv("IDGEN_PROVENANCE", "0")  # unwatermarked images: equal for equal jobs
    ctx = DemoContext(tiny=True, root=tmp_path)
    barrier = threading.Barrier(2)
    steps: dict[str, list[float]] = {}

    def run(name):
        log = steps.setdefault(name, [])
        job = Job(progress=lambda value, desc=None: desc == "denoising" and log.append(time.monotonic()))
        barrier.wait()
        return run_generate(ctx, "faceid", [FACE], None, None, "p", "", 8, None, 3, None, None, None, None,
                            "default", 1, 0, 1, job=job)

    with ThreadPoolExecutor(2) as pool:
        (first, *_), (second, *_) = pool.map(run, ["a", "b"])
    (a_start, a_end), (b_start, b_end) = [(min(log), max(log)) for log in steps.values()]
    assert len(steps["a"]) == len(steps["b"]) == 8
    assert a_end < b_start or b_end < a_start  # one after the other, never interleaved
    assert np.array_equal(pixels(first[0]), pixels(second[0]))  # neither disturbed the other's scheduler


def test_each_page_session_has_its_own_results_folder(served):
    ctx, app, client = served
    other = Client(app.test_url, verbose=False)
    mine = Path(client.predict(*generate_args(), api_name="/generate")[1]["files"][0])
    theirs = Path(other.predict(*generate_args(), api_name="/generate")[1]["files"][0])
    assert mine.parents[1] == ctx.session_folder(client.session_hash)
    assert theirs.parents[1] == ctx.session_folder(other.session_hash) != mine.parents[1]
    # a session id is the client's to choose: it names no path
    assert ctx.session_folder("../../etc").parent == ctx.root / "results"


def test_error_messages_name_files_not_server_paths():
    assert without_paths("image file '/tmp/gradio/0a1b/my photo.jpg' could not be decoded") == \
        "image file 'my photo.jpg' could not be decoded"
    assert without_paths("/srv/idgen/results/x/faceid-3-0.png: exists (see /srv/models/)") == \
        "faceid-3-0.png: exists (see models/)"
    kept = "inpaint/swap needs it; get it from https://huggingface.co/h94/IP-Adapter-FaceID, 3/4 done"
    assert without_paths(kept) == kept


def test_no_telemetry(served):
    _, app, _ = served
    assert app.analytics_enabled is False and os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


def test_demo_command_checks_its_address(capsys, monkeypatch):
    monkeypatch.setattr(demo_app, "build_app", lambda *a, **k: pytest.fail("the server was started"))
    assert main(["demo", "--port", "99999"]) == 2 and main(["demo", "--port", "0"]) == 2
    assert "between 1 and 65535" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["demo", "--port", str(port)]) == 3
        assert capsys.readouterr().err == f"idgen: port {port} on 127.0.0.1 is in use; pass --port\n"
    assert main(["demo", "--host", "no-such-host.invalid", "--port", str(free_port())]) == 3
    assert "'no-such-host.invalid' does not resolve" in capsys.readouterr().err
    assert main(["demo", "--host", "192.0.2.1", "--port", str(free_port())]) == 3  # not this machine's
    err = capsys.readouterr().err
    assert err.startswith("idgen: cannot listen on 192.0.2.1") and "Traceback" not in err


def test_generate_with_a_few_step_preset_and_a_lora_trained_here(tmp_path):
    from test_acceleration import _lora_file

    ctx = DemoContext(tiny=True, root=tmp_path / "demo")
    unet = build_generation_pipeline("faceid", embedded_default=True)[0].unet
    lcm = _lora_file(unet, tmp_path / "lcm-lora.safetensors")
    trained = ctx.session_folder(LOCAL_SESSION) / "lora-1" / "run" / "pytorch_lora_weights.safetensors"
    trained.parent.mkdir(parents=True)
    _lora_file(unet, trained, seed=1)
    assert ctx.lora_files(LOCAL_SESSION) == [str(trained)]  # the picker offers what the Train tab made

    def generate(**speed):
        return run_generate(ctx, "faceid", [FACE], None, None, "p", "", "", None, 3, None, None, None, None,
                            "default", 1, 0, 1, **speed)[1]

    record = generate(mode="lcm", fast_weights=str(lcm), lora=str(trained), lora_scale=0.5, memory="balanced")
    assert record["scheduler"] == "LCMScheduler"
    assert (record["parameters"]["num_inference_steps"], record["parameters"]["guidance_scale"]) == (4, 1.0)
    assert record["speed"]["fast_preset"]["preset"] == "lcm"
    assert record["speed"]["loras"] == {"files": [{"path": str(trained), "scale": 0.5}], "applied": "adapter"}  # beside FaceID's
    assert record["speed"]["memory"]["mode"] == "balanced"
    # back to the standard mode: a fresh pipeline, the few-step one is dropped
    record = generate()
    assert record["scheduler"] != "LCMScheduler" and record["parameters"]["num_inference_steps"] == 4
    assert len(ctx._pipelines) == 1
    with pytest.raises(IdgenError, match="needs its weights"):
        generate(mode="tcd")


def test_generate_tab_people_assignment_and_the_composable_inputs(tmp_path):
    """The Generate tab's People table (faces picked on the photos, each with a region), style
    preset and image, negative noise, img2img and an extra ControlNet reach the generation."""
    from idgen.app.demo.generate_tab import PEOPLE_HEADERS, add_person, people_from_table

    ctx = DemoContext(tiny=True, root=tmp_path / "demo")
    table = add_person(add_person([], [1, 0], "left"), [2, 0], "0.5,0,1,1")
    assert table == [[1, 0, "left"], [2, 0, "0.5,0,1,1"]]
    people = people_from_table({"headers": PEOPLE_HEADERS, "data": table}, [FACE, OTHER])
    assert [(p.faces, p.box) for p in people] == [([f"{FACE}#0"], "left"), ([f"{OTHER}#0"], (0.5, 0.0, 1.0, 1.0))]
    with pytest.raises(IdgenError, match="photo 3"):
        people_from_table([[3, 0, "left"]], [FACE, OTHER])
    with pytest.raises(IdgenError, match="click a face"):
        add_person([], None, "left")

    def generate(method, **extra):
        return run_generate(ctx, method, [FACE, OTHER], None, None, "p", "", 2, None, 3, None, None, None, None,
                            "default", 1, 0, 1, **extra)[1]

    record = generate("faceid", people=table, style="neon", negative_noise=0.5)
    assert [p["box"] for p in record["people"]] == ["left", (0.5, 0.0, 1.0, 1.0)]
    assert record["style"]["preset"] == "neon" and record["request"].negative_noise == 0.5
    record = generate("instantid", init_image=OTHER, strength=0.9, control_kind="canny", control_image=OTHER,
                      control_weight=0.3)
    assert record["pipeline"] == "StableDiffusionXLInstantIDImg2ImgPipeline"
    assert record["controls"][0]["path"] == "tiny" and record["controls"][0]["scale"] == 0.3
    with pytest.raises(IdgenError, match="not available with arc2face"):
        generate("arc2face", people=table)
