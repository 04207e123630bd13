"""Video I/O (PyAV), face tracking, the per-face video driver and video face swap."""

import functools
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from idgen.errors import IdgenError
from idgen.face import get_face_analyzer
from idgen.face.tracking import track_faces
from idgen.face.types import Face
from idgen.image_io import load_image
from idgen.video import VideoReadError, probe_video, read_video, write_video
from idgen.video_faces import process_video

from conftest import SHARED

AUDIO_RATE = 16000


def make_video(path, frames, fps=10, audio=True):
    """A lossless H.264 MP4 of `frames`, with a 440 Hz AAC tone as long as the video."""
    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=fps)
    video.pix_fmt, video.options = "yuv420p", {"crf": "0"}
    video.height, video.width = frames[0].shape[:2]
    sound = out.add_stream("aac", rate=AUDIO_RATE) if audio else None
    for frame in frames:
        for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            out.mux(packet)
    for packet in video.encode():
        out.mux(packet)
    if sound is not None:
        t = np.arange(int(AUDIO_RATE * len(frames) / fps)) / AUDIO_RATE
        tone = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                          format="fltp", layout="mono")
        tone.sample_rate = AUDIO_RATE
        for packet in [*sound.encode(tone), *sound.encode()]:
            out.mux(packet)
    out.close()
    return path


def audio_seconds(path):
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)


@functools.lru_cache(maxsize=None)
def _analyzer():
    return get_face_analyzer("dlib")


def face_frames(n=10, blank=(4, 5)):
    """A portrait drifting 3 px per frame to the right; frames in `blank` hold no face."""
    portrait = cv2.resize(load_image(SHARED / "faces" / "portrait_glasses.jpg"), (240, 240))
    frames = []
    for i in range(n):
        canvas = np.full((256, 288, 3), 90, np.uint8)
        if i not in blank:
            canvas[8:248, 3 * i: 3 * i + 240] = portrait
        frames.append(canvas)
    return frames


def test_round_trip_keeps_frames_fps_and_audio(tmp_path):
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(10)]
    source = make_video(tmp_path / "in.mp4", frames)
    out = tmp_path / "out.mp4"
    assert write_video(out, frames, Fraction(10), audio_from=source, crf=0) == 10
    info = probe_video(out)
    assert (info.num_frames, info.fps, info.width, info.height, info.has_audio) == (10, 10, 64, 48, True)
    decoded, _ = read_video(out)
    assert decoded.shape == (10, 48, 64, 3) and np.abs(decoded.astype(int) - np.stack(frames)).max() <= 1
    assert abs(audio_seconds(out) - audio_seconds(source)) < 1024 / AUDIO_RATE  # one AAC frame


def test_odd_sizes_corrupt_and_missing_files(tmp_path):
    odd = [np.zeros((45, 61, 3), np.uint8)] * 3
    write_video(tmp_path / "odd.mp4", odd, 5)
    assert (probe_video(tmp_path / "odd.mp4").width, probe_video(tmp_path / "odd.mp4").height) == (62, 46)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(VideoReadError, match="could not be opened"):
        probe_video(bad)
    with pytest.raises(VideoReadError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(IdgenError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [], 5)


def test_frames_without_faces_pass_through_unchanged(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(10)]
    source = make_video(tmp_path / "noface.mp4", frames)
    decoded, _ = read_video(source)
    import idgen.video_faces as video_faces

    written = []
    real_write = video_faces.write_video

    def capture(path, frames, fps, **kwargs):
        def tee():
            for frame in frames:
                written.append(frame.copy())
                yield frame
        return real_write(path, tee(), fps, **kwargs)

    monkeypatch.setattr(video_faces, "write_video", capture)
    calls = []
    report = process_video(source, tmp_path / "out.mp4", lambda jobs: calls.append(jobs) or [np.zeros_like(j.crop) for j in jobs],
                           analyzer=_analyzer(), crop_size=64, progress=False)
    assert calls == [] and report.frames == 10 and report.frames_passed_through == 10
    np.testing.assert_array_equal(np.stack(written), decoded)
    assert probe_video(tmp_path / "out.mp4").has_audio


def test_a_face_lost_for_two_frames_is_one_interpolated_track(tmp_path):
    source = make_video(tmp_path / "face.mp4", face_frames())
    seen = []

    def process(jobs):
        seen.extend((j.frame_index, j.track.track_id, j.track.interpolated) for j in jobs)
        return [255 - j.crop for j in jobs]

    report = process_video(source, tmp_path / "out.mp4", process, analyzer=_analyzer(), crop_size=64, batch_size=4,
                           progress=False)
    assert sorted(f for f, _, _ in seen) == list(range(10))
    assert {t for _, t, _ in seen} == {0} and report.tracks == 1
    assert [f for f, _, interp in seen if interp] == [4, 5]
    assert any("lost for 2 frames (4-5)" in n for n in report.notes)
    out, _ = read_video(tmp_path / "out.mp4")
    original, _ = read_video(source)
    assert out.shape == original.shape and np.abs(out.astype(int) - original).max() > 100
    assert abs(audio_seconds(tmp_path / "out.mp4") - audio_seconds(source)) < 1024 / AUDIO_RATE


def _face(x, embedding):
    return Face(bbox=np.array([x, 10, x + 20, 30], np.float32),
                kps=np.tile(np.array([[x + 10, 20]], np.float32), (5, 1)), score=1.0, image_size=(100, 40),
                embedding=np.asarray(embedding, np.float32))


def test_crossing_faces_keep_their_ids_by_identity():
    a, b = [1, 0, 0], [0, 1, 0]
    # A walks right, B walks left; at frames 2-3 their boxes overlap almost fully
    frames = [[_face(10 + 10 * t, a), _face(50 - 10 * t, b)] for t in range(5)]
    per_frame, _ = track_faces(frames, identity_threshold=0.5, smooth_sigma=0)
    for t, faces in enumerate(per_frame):
        ids = {tf.track_id: tf.face.embedding.argmax() for tf in faces}
        assert ids == {0: 0, 1: 1}, f"identity swap at frame {t}"


def test_smoothing_reduces_keypoint_jitter():
    rng = np.random.default_rng(0)
    frames = [[_face(30 + rng.normal(0, 2), [1, 0, 0])] for _ in range(30)]
    raw, _ = track_faces(frames, smooth_sigma=0)
    smooth, _ = track_faces(frames, smooth_sigma=2)

    def jitter(per_frame):
        return np.diff([f[0].kps[0, 0] for f in per_frame]).std()

    assert jitter(smooth) < 0.5 * jitter(raw)


def test_video_face_swap_keeps_length_audio_and_tracks(tmp_path):
    from idgen.pipelines import FaceSwapPipeline
    from test_pva import sd15_pipeline

    source = make_video(tmp_path / "face.mp4", face_frames(6, blank=(3,)))
    swapper = FaceSwapPipeline(sd15_pipeline(), _analyzer())
    embeds = np.random.default_rng(0).normal(size=(1, 512)).astype(np.float32)
    report = swapper.swap_video(source, tmp_path / "swap.mp4", [embeds], num_inference_steps=2, progress=False)
    info = probe_video(tmp_path / "swap.mp4")
    assert info.num_frames == 6 and info.has_audio and report.tracks == 1
    out, _ = read_video(tmp_path / "swap.mp4")
    original, _ = read_video(source)
    assert np.abs(out.astype(int) - original).max() > 10
    corner = (slice(0, 8), slice(0, 3))  # outside every face crop: untouched (up to H.264)
    assert np.abs(out[:, corner[0], corner[1]].astype(int) - original[:, corner[0], corner[1]]).max() <= 2
