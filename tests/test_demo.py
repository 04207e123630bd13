"""The Gradio demo, in-process: every endpoint through `gradio_client` on the tiny models, errors
as readable messages, the banner, the queue, and the handlers behind each tab."""

import json
import socket

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402

from idgen.demo import DemoContext, build_app  # noqa: E402
from idgen.demo.edit_tab import editor_photo_and_mask, run_inpaint  # noqa: E402
from idgen.demo.train_tab import run_train  # noqa: E402
from idgen.errors import IdgenError  # noqa: E402

from conftest import SHARED  # noqa: E402

FACE = str(SHARED / "faces" / "portrait_glasses.jpg")
OTHER = str(SHARED / "faces" / "portrait_smile.jpg")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    ctx = DemoContext(tiny=True, root=tmp_path_factory.mktemp("demo"))
    app = build_app(ctx)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield ctx, app, Client(f"http://127.0.0.1:{port}/", verbose=False)
    app.close()


def generate_args(method="faceid", photo=FACE, **overrides):
    args = dict(method=method, files=[handle_file(photo)], face_index=None, pose=None, prompt="photo of a person",
                negative="", steps=2, guidance=None, seed=3, identity_scale=None, control_scale=None, width=None,
                height=None, scheduler="default", num_images=1, identity_start=0, identity_end=1)
    args.update(overrides)
    return list(args.values())


@pytest.mark.parametrize("method", ["instantid", "faceid", "arc2face"])
def test_generate_endpoint(served, method):
    ctx, _, client = served
    images, record, files = client.predict(*generate_args(method), api_name="/generate")
    assert len(images) == 1 and record["embedded_default"] is True and record["request"]["seed"] == 3
    assert Image.open(images[0]["image"]).size == (128, 128)
    assert any(f.endswith("record.json") for f in files)


def test_generate_knobs_scheduler_face_index_and_window(served):
    _, _, client = served
    _, record, _ = client.predict(*generate_args("faceid", scheduler="Euler", face_index=0, identity_start=0.5,
                                                 num_images=2), api_name="/generate")
    assert record["scheduler"] == "EulerDiscreteScheduler" and len(record["files"]) == 2
    assert record["request"]["extra"] == {"identity_start": 0.5, "identity_end": 1.0}


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
    with pytest.raises(Exception) as err:
        client.predict(*generate_args("arc2face", identity_start=0.5), api_name="/generate")
    assert "Arc2Face has no identity window" in str(err.value)


def test_detect_faces_endpoint(served):
    _, _, client = served
    items = client.predict([handle_file(FACE)], api_name="/detect_faces")
    assert len(items) == 1 and "1 face(s)" in items[0]["caption"]


def test_swap_endpoint(served):
    _, _, client = served
    image, video, record, files = client.predict(
        handle_file(FACE), None, [handle_file(OTHER)], None, "all", None, "pva", "photo of a person",
        2, None, 0, None, 1.0, 8, 8, "face", api_name="/swap")
    assert video is None and record["faces"][0]["source"] == 0
    assert np.any(np.asarray(Image.open(image).convert("RGB")) != np.asarray(Image.open(FACE).convert("RGB")))
    with pytest.raises(Exception, match="either a photo or a video"):
        client.predict(None, None, [handle_file(OTHER)], None, "all", None, "pva", "p", 2, None, 0, None, 1.0, 8, 8,
                       "face", api_name="/swap")


def test_restore_endpoint_photo_and_video(served, tmp_path):
    from test_video import face_frames, make_video

    _, _, client = served
    image, video, record, files = client.predict(handle_file(FACE), None, None, 0.7, ["bfr"], 2, 0, api_name="/restore")
    assert video is None and record["faces"][0]["restored"] and record["fidelity"] == 0.7
    clip = make_video(tmp_path / "clip.mp4", face_frames(3, blank=()))
    image, video, record, files = client.predict(None, handle_file(str(clip)), None, 0.5, ["bfr", "colorize"], 2,
                                                 0, api_name="/restore")
    assert image is None and record["video"]["tracks"] == 1 and record["tasks"] == ["bfr", "colorize"]
    with pytest.raises(Exception, match="either a photo or a video"):
        client.predict(None, None, None, 0.5, ["bfr"], 2, 0, api_name="/restore")


def test_models_endpoint_and_banner(served):
    _, app, client = served
    table, text = client.predict(api_name="/models")
    assert "sd15" in [row[0] for row in table["data"]] and "idgen" in text
    config = json.dumps(app.config)
    assert "tiny embedded default" in config


def test_queue_has_a_concurrency_limit(served):
    _, app, _ = served
    heavy = [fn for fn in app.fns.values() if fn.api_name in ("generate", "inpaint", "swap", "train_lora")]
    assert len(heavy) == 4 and all(fn.concurrency_limit == "default" for fn in heavy)
    assert app._queue.default_concurrency_limit == 1 and app._queue.max_size == 16


def test_inpaint_handler_repaints_only_the_painted_area(served):
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


def test_train_streams_the_loss_and_cancel_stops_it(served):
    ctx = served[0]
    updates = list(run_train(ctx, [FACE, OTHER], "a photo of sks person", 3, 4, 1e-3))
    assert [len(u[1]) for u in updates] == [1, 2, 3, 3]
    status, _, weights = updates[-1]
    assert status.startswith("done") and any(w.endswith("pytorch_lora_weights.safetensors") for w in weights)

    stream = run_train(ctx, [FACE, OTHER], "a photo of sks person", 50, 4, 1e-3)
    next(stream)
    stream.close()  # what Gradio's cancel does
    run = max((ctx.root / "results").glob("lora-*"), key=lambda p: p.stat().st_mtime) / "run"
    import threading
    import time

    for _ in range(200):  # the worker stops at its next step
        if not any(t.name == "idgen-train-lora" for t in threading.enumerate()):
            break
        time.sleep(0.1)
    assert not any(t.name == "idgen-train-lora" for t in threading.enumerate())
    assert not (run / "summary.json").exists()
    with pytest.raises(IdgenError, match="upload photos"):
        next(run_train(ctx, [], "a photo of sks person", 3, 4, 1e-3))
