"""Batched face swap and video restoration equal the crop-by-crop / window-by-window runs.

Tolerance: batched kernels round floats differently from batch-1 ones, so pipeline outputs agree
to float precision (atol 1e-4 on [0, 1] images and SVFR frames), the pipelines' images rounded to
uint8 to at most 1 grey level (`GREY_LEVELS`), the colour-matched crops to `MATCHED_LEVELS`.
Videos are compared through the crops that are pasted into the frames, not through the encoded
file (H.264 turns a 1-level change into larger ones).
"""

import functools

import cv2
import numpy as np
import pytest
import torch

from idgen.adapters.svfr import window_shift, window_starts
from idgen.errors import IdgenError
from idgen.image_io import load_image
from idgen.media import VIDEO_STEPS
from idgen.media.video_faces import VideoReport
from idgen.models.recipes import build_edit_pipeline, build_restore_pipeline
from idgen.pipelines import FaceSwapper
from idgen.pipelines.pipeline_face_swap import default_batch_size

from conftest import SHARED, dlib_faces
from test_video import make_video

GREY_LEVELS = 1  # the most a batched uint8 image of the pipeline may differ from the crop-by-crop one
#: ... and the colour-matched crop: the Reinhard transfer scales a 1-level change by the ratio of
#: the target's to the result's standard deviation in L*a*b*.
MATCHED_LEVELS = 3
SOURCE_A = np.random.default_rng(0).normal(size=(1, 512)).astype(np.float32)
SOURCE_B = np.random.default_rng(1).normal(size=(1, 512)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _pipeline(method):
    pipe = build_edit_pipeline(method, embedded_default=True)[0]
    pipe.set_progress_bar_config(disable=True)
    return pipe


@functools.lru_cache(maxsize=None)
def _portrait(name, size):
    return cv2.resize(load_image(SHARED / "faces" / name), (size, size))


def two_face_frames(n):
    """Two people side by side (glasses left, older right), drifting 2 px per frame."""
    frames = []
    for i in range(n):
        canvas = np.full((220, 420, 3), 90, np.uint8)
        canvas[10:190, 2 * i: 2 * i + 180] = _portrait("portrait_glasses.jpg", 180)
        canvas[10:210, 200 + 2 * i: 400 + 2 * i] = _portrait("portrait_older.jpg", 200)
        frames.append(canvas)
    return frames


@pytest.fixture
def spy(monkeypatch):
    """Records every pipeline call of `FaceSwapper` (its crops' seeds), its images by crop (before
    the colour match) and every crop `swap_crops` returns (after it)."""
    record = {"calls": [], "crops": [], "raw": {}}
    inpaint, swap = FaceSwapper._inpaint, FaceSwapper.swap_crops

    def counting_inpaint(self, crops, *args):
        record["calls"].append([c.seed for c in crops])
        out = inpaint(self, crops, *args)
        record["raw"].update({(c.seed, c.crop.tobytes()): image for c, image in zip(crops, out)})
        return out

    def recording_swap(self, *args, **kwargs):
        out = swap(self, *args, **kwargs)
        record["crops"].extend(out)
        return out

    monkeypatch.setattr(FaceSwapper, "_inpaint", counting_inpaint)
    monkeypatch.setattr(FaceSwapper, "swap_crops", recording_swap)
    return record


def _run(record, fn):
    for kept in record.values():
        kept.clear()
    result = fn()
    return result, list(record["calls"]), np.stack(record["crops"]), dict(record["raw"])


def _levels(a, b) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def _same_swaps(raw, other_raw, crops, other_crops):
    """The pipeline's images of every crop within `GREY_LEVELS`, the colour-matched crops within
    `MATCHED_LEVELS`."""
    assert raw.keys() == other_raw.keys()
    assert max(_levels(raw[k], other_raw[k]) for k in raw) <= GREY_LEVELS
    assert _levels(crops, other_crops) <= MATCHED_LEVELS


# -- video swap -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pva", "faceid", "instantid"])
def test_batched_video_swap_equals_frame_by_frame(method, spy, tmp_path):
    source = make_video(tmp_path / "two.mp4", two_face_frames(3), audio=None)
    swapper = FaceSwapper(_pipeline(method), dlib_faces())
    run = functools.partial(swapper.swap_video, source, tmp_path / "out.mp4", [SOURCE_A, SOURCE_B], mapping="index",
                            num_inference_steps=2, progress=False)
    report, one_by_one, crops, raw = _run(spy, lambda: run(batch_size=1))
    batched_report, batched, batched_crops, batched_raw = _run(spy, lambda: run(batch_size=8))
    assert report.tracks == 2 and report.faces_per_frame == [2, 2, 2] and batched_report == report
    # frame by frame: one call per crop; batched: one call per source identity, each crop its track's seed
    assert one_by_one == [[0], [1]] * 3
    assert batched == [[0, 0, 0], [1, 1, 1]]
    _same_swaps(raw, batched_raw, crops, batched_crops)


def test_one_source_puts_every_face_of_the_batch_in_one_call(spy, tmp_path):
    source = make_video(tmp_path / "two.mp4", two_face_frames(3), audio=None)
    swapper = FaceSwapper(_pipeline("pva"), dlib_faces())
    run = functools.partial(swapper.swap_video, source, tmp_path / "out.mp4", [SOURCE_A], num_inference_steps=2,
                            progress=False)
    _, calls, crops, raw = _run(spy, lambda: run(batch_size=4))
    assert calls == [[0, 1, 0, 1], [0, 1]]  # 4 crops at most per call, the frames' faces in order
    _, default_calls, default_crops, default_raw = _run(spy, lambda: run())  # default: 8 crops of 64 px
    assert default_batch_size(swapper.crop_size) == 8 and default_calls == [[0, 1] * 3]
    _same_swaps(raw, default_raw, crops, default_crops)


def test_video_progress_advances_per_frame(spy, tmp_path):
    source = make_video(tmp_path / "two.mp4", two_face_frames(3), audio=None)
    seen = []
    FaceSwapper(_pipeline("pva"), dlib_faces()).swap_video(
        source, tmp_path / "out.mp4", [SOURCE_A], num_inference_steps=2, batch_size=2,
        progress=lambda done, total: seen.append((done, total, len(spy["calls"]))))
    detection, editing = seen[:3], seen[3:]
    assert [d[:2] for d in detection] == [(1, 3), (2, 3), (3, 3)]
    # editing: frames 1-2 once the first batch (2 frames, 4 crops: 2 calls) is written, frame 3 after the next
    assert editing == [(1, 3, 2), (2, 3, 2), (3, 3, 3)]


# -- photo swap -----------------------------------------------------------------------------------


def _sequential(monkeypatch):
    """Make every face's crop 'overlap' the earlier ones: the swapper then runs face by face."""
    monkeypatch.setattr(FaceSwapper, "_footprint", lambda self, inverse, size: np.ones(size[::-1], bool))


def test_photo_faces_with_separate_crops_share_one_call(spy, monkeypatch):
    photo = two_face_frames(1)[0]
    swapper = FaceSwapper(_pipeline("instantid"), dlib_faces())
    batched, calls, crops, raw = _run(spy, lambda: swapper(photo, [SOURCE_A], num_inference_steps=2))
    assert calls == [[0, 1]]
    _, calls, _, _ = _run(spy, lambda: swapper(photo, [SOURCE_A, SOURCE_B], mapping="index", num_inference_steps=2))
    assert calls == [[0], [1]]  # one person per call
    _sequential(monkeypatch)
    sequential, calls, sequential_crops, sequential_raw = _run(spy, lambda: swapper(photo, [SOURCE_A],
                                                                                    num_inference_steps=2))
    assert calls == [[0], [1]]
    _same_swaps(raw, sequential_raw, crops, sequential_crops)
    assert _levels(batched.image, sequential.image) <= MATCHED_LEVELS
    assert np.abs(batched.image.astype(int) - photo).max() > 10


def test_photo_faces_with_overlapping_crops_stay_sequential(spy, monkeypatch):
    photo = np.full((200, 310, 3), 90, np.uint8)  # the crops overlap (x 33-167 and 151-282)
    photo[30:170, 160:300] = _portrait("portrait_older.jpg", 140)
    photo[10:190, 0:180] = _portrait("portrait_glasses.jpg", 180)
    swapper = FaceSwapper(_pipeline("pva"), dlib_faces())
    out, calls, _, _ = _run(spy, lambda: swapper(photo, [SOURCE_A], num_inference_steps=2))
    assert [f.source for f in out.faces] == [0, 0] and calls == [[0], [1]]
    _sequential(monkeypatch)
    reference, _, _, _ = _run(spy, lambda: swapper(photo, [SOURCE_A], num_inference_steps=2))
    np.testing.assert_array_equal(out.image, reference.image)  # the very same calls


@pytest.mark.parametrize("method", ["pva", "faceid", "instantid"])
def test_a_batch_of_crops_in_one_call_equals_one_call_each(method):
    """What `FaceSwapper` relies on: lists of images, masks, prompts (and InstantID's keypoints
    `[B, 5, 2]`) with one generator per image give each image its single-call result."""
    pipe = _pipeline(method)
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    mask = np.zeros((64, 64), np.uint8)
    mask[16:52, 16:48] = 255
    kps = np.array([[24, 28], [40, 28], [32, 36], [26, 44], [38, 44]], np.float32)
    kps = np.stack([kps, kps + 3])
    common = dict(face_embeds=SOURCE_A, num_inference_steps=2, height=64, width=64, output_type="np")
    each = [{"target_kps": k} if method == "instantid" else {} for k in kps]
    single = [pipe(prompt="a person", image=p, mask_image=mask, generator=torch.Generator().manual_seed(s),
                   **e, **common).images[0] for p, e, s in zip(photos, each, (3, 4))]
    batch = pipe(prompt=["a person"] * 2, image=photos, mask_image=[mask] * 2,
                 generator=[torch.Generator().manual_seed(s) for s in (3, 4)],
                 **({"target_kps": kps} if method == "instantid" else {}), **common).images
    np.testing.assert_allclose(batch, np.stack(single), atol=1e-4)
    if method == "instantid":
        with pytest.raises(IdgenError, match=r"2 images need as many masks"):
            pipe(prompt=["a person"] * 2, image=photos, mask_image=[mask] * 2, target_kps=kps[:1], **common)


# -- video restoration ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _svfr():
    pipe = build_restore_pipeline("video", embedded_default=True)[0]
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_svfr_windows_batched_equal_one_window_per_call():
    pipe = _svfr()
    clip = (np.random.default_rng(0).random((7, 32, 32, 3)) * 255).astype(np.uint8)
    calls = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        out = {}
        for window_batch in (1, 3):
            calls.clear()
            out[window_batch] = pipe(clip, window=4, overlap=1, num_inference_steps=2, reference=clip[0],
                                     identity_features=np.ones(512, np.float32), window_batch=window_batch,
                                     generator=torch.Generator().manual_seed(0)).frames
            out[window_batch, "calls"] = list(calls)
    finally:
        handle.remove()
    # 7 frames in windows of 4 (overlap 1; the grid shifts per step): CFG doubles each UNet batch
    windows = [len(window_starts(7, 4, 1, window_shift(step, 1))) for step in range(2)]
    assert windows == [2, 3] and out[1, "calls"] == [2] * 5 and out[3, "calls"] == [4, 6]
    np.testing.assert_allclose(out[1], out[3], atol=1e-4)


# -- defaults and knobs of the jobs ---------------------------------------------------------------


def _fake_job(kwargs, output_at):
    """A stand-in for a video job: records its arguments, writes an empty output (`args[output_at]`)."""
    def run(*args, **given):
        kwargs.update(given)
        args[output_at].write_bytes(b"")
        return VideoReport(frames=1, frames_with_faces=1, tracks=1, tracks_processed=1)
    return run


def test_video_jobs_default_to_the_video_steps(monkeypatch, tmp_path, empty_home):
    from idgen.app import restore
    from idgen.app.edit import EditRequest, run_edit
    from idgen.app.restore import RestoreRequest, run_restore

    video = make_video(tmp_path / "clip.mp4", two_face_frames(1), audio=None)
    face = str(SHARED / "faces" / "portrait_smile.jpg")
    swapped, restored = {}, {}
    monkeypatch.setattr(FaceSwapper, "swap_video", lambda self, *a, **k: _fake_job(swapped, 1)(*a, **k))
    monkeypatch.setattr(restore, "restore_video", _fake_job(restored, 2))
    record = run_edit(EditRequest(target=str(video), sources=[[face]], face_backend="dlib", embedded_default=True),
                      tmp_path / "swap")
    assert swapped["num_inference_steps"] == VIDEO_STEPS == record["parameters"]["num_inference_steps"] == 12
    assert swapped["batch_size"] is None
    run_edit(EditRequest(target=str(video), sources=[[face]], steps=3, batch_size=5, face_backend="dlib",
                         embedded_default=True), tmp_path / "swap3")
    assert swapped["num_inference_steps"] == 3 and swapped["batch_size"] == 5
    record = run_restore(RestoreRequest(input=str(video), face_backend="dlib", embedded_default=True),
                         tmp_path / "restore")
    assert restored["num_inference_steps"] == VIDEO_STEPS == record["parameters"]["num_inference_steps"]
    assert "window_batch" not in restored
    run_restore(RestoreRequest(input=str(video), batch_size=4, face_backend="dlib", embedded_default=True),
                tmp_path / "restore4")
    assert restored["window_batch"] == 4


def test_the_cli_documents_the_video_steps_and_takes_a_batch_size(capsys):
    from idgen.app.cli import main

    for command in ("swap", "restore"):
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert f"{VIDEO_STEPS} for videos" in text and "--batch-size" in text
