"""Video I/O (PyAV), the per-face video/photo driver and video face swap."""

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from idgen.errors import IdgenError
from idgen.image_io import load_image
from idgen.media.video import VideoReadError, VideoWriter, probe_video, read_frames, read_video, write_video
from idgen.media.video_faces import process_image_faces, process_video

from conftest import SHARED, dlib_faces

AUDIO_RATE = 16000


def make_video(path, frames, fps=10, audio="aac"):
    """A lossless H.264 video of `frames` with a 440 Hz tone as long as the video, encoded with the
    `audio` codec (None: no audio track)."""
    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=fps)
    video.pix_fmt, video.options = "yuv420p", {"crf": "0"}
    video.height, video.width = frames[0].shape[:2]
    sound = out.add_stream(audio, rate=AUDIO_RATE, layout="mono") if audio else None
    for frame in frames:
        for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            out.mux(packet)
    for packet in video.encode():
        out.mux(packet)
    if sound is not None:
        t = np.arange(int(AUDIO_RATE * len(frames) / fps)) / AUDIO_RATE
        tone = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                          format="fltp", layout="mono")
        tone.sample_rate, tone.pts = AUDIO_RATE, 0
        for packet in [*sound.encode(tone), *sound.encode()]:
            out.mux(packet)
    out.close()
    return path


def audio_of(path):
    """(codec name, duration in seconds) of the first audio stream, from the decoded samples."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.name, samples / stream.codec_context.sample_rate


def noise_frames(n=10, shape=(48, 64, 3), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, shape, dtype=np.uint8) for _ in range(n)]


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


# -- I/O ---------------------------------------------------------------------------------------


def test_round_trip_keeps_frames_fps_size_and_audio(tmp_path):
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(10)]
    source = make_video(tmp_path / "in.mp4", frames)
    out = tmp_path / "out.mp4"
    assert write_video(out, frames, Fraction(10), audio_from=source, crf=0) == 10
    info = probe_video(out)
    assert (info.num_frames, info.fps, info.width, info.height, info.has_audio) == (10, 10, 64, 48, True)
    assert info.codec == "h264" and info.duration == pytest.approx(1.0, abs=0.1)
    decoded, _ = read_video(out)
    assert decoded.shape == (10, 48, 64, 3) and np.abs(decoded.astype(int) - np.stack(frames)).max() <= 1
    codec, seconds = audio_of(out)
    assert codec == "aac" and seconds == pytest.approx(audio_of(source)[1], abs=1024 / AUDIO_RATE)  # one AAC frame
    assert [f.mean() for f in read_frames(out, start=7, max_frames=2)] == pytest.approx([140, 160], abs=1)


def test_audio_mp4_cannot_hold_is_reencoded_to_aac_with_its_duration(tmp_path):
    frames = noise_frames(10)
    source = make_video(tmp_path / "in.mkv", frames, audio="pcm_s16le")
    assert probe_video(source).num_frames == 10  # Matroska stores no frame count: counted
    with VideoWriter(tmp_path / "out.mp4", 10, (64, 48), audio_from=source) as writer:
        for frame in frames:
            writer.write(frame)
    codec, seconds = audio_of(tmp_path / "out.mp4")
    assert codec == "aac" and seconds == pytest.approx(1.0, abs=1024 / AUDIO_RATE)
    # audio is interleaved with the video, not appended after it
    with av.open(str(tmp_path / "out.mp4")) as container:
        kinds = [p.stream.type for p in container.demux() if p.size]
    assert kinds.index("audio") < len(kinds) // 2


def test_odd_sizes_are_padded_and_rotation_is_applied(tmp_path):
    y, x = np.mgrid[:45, :61]
    odd = [np.stack([2 * x + 2 * y + 10 * i, 255 - 2 * x - 2 * y, np.full_like(x, 128)], axis=-1).astype(np.uint8)
           for i in range(3)]
    write_video(tmp_path / "odd.mp4", odd, 5, crf=0)
    decoded, info = read_video(tmp_path / "odd.mp4")
    assert (info.width, info.height) == (62, 46)
    error = np.abs(decoded[:, :45, :61].astype(int) - np.stack(odd))
    assert error.max() <= 6 and error.mean() < 2.5  # yuv420p (limited range) rounding
    np.testing.assert_array_equal(decoded[:, 45], decoded[:, 44])  # the padding row copies the edge

    out = av.open(str(tmp_path / "rotated.mp4"), "w")  # a phone video: stored landscape, shown portrait
    stream = out.add_stream("libx264", rate=10)
    stream.pix_fmt, stream.width, stream.height, stream.options = "yuv420p", 64, 48, {"crf": "0"}
    stream.set_display_rotation(90)
    marked = np.zeros((48, 64, 3), np.uint8)
    marked[:8, :8] = 255  # top-left corner
    for packet in [*stream.encode(av.VideoFrame.from_ndarray(marked, format="rgb24")), *stream.encode()]:
        out.mux(packet)
    out.close()
    frames, info = read_video(tmp_path / "rotated.mp4")
    assert (info.width, info.height) == (48, 64) and frames.shape == (1, 64, 48, 3)
    assert frames[0, -4, 4].min() > 200 and frames[0, 4, 4].max() < 50  # 90° counter-clockwise


def test_bad_files_and_limits_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(VideoReadError, match="could not be opened"):
        probe_video(bad)
    with pytest.raises(VideoReadError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(VideoReadError, match="does not exist"):
        list(read_frames(tmp_path / "missing.mp4"))
    with av.open(str(tmp_path / "sound.m4a"), "w") as sound:
        stream = sound.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        tone = av.AudioFrame.from_ndarray(np.zeros((1, 2048), np.float32), format="fltp", layout="mono")
        tone.sample_rate = AUDIO_RATE
        for packet in [*stream.encode(tone), *stream.encode()]:
            sound.mux(packet)
    with pytest.raises(VideoReadError, match="no video stream"):
        probe_video(tmp_path / "sound.m4a")
    source = make_video(tmp_path / "in.mp4", noise_frames(4), audio=None)
    with pytest.raises(VideoReadError, match="above the limit of 1000 pixels"):
        probe_video(source, max_frame_pixels=1000)
    with pytest.raises(VideoReadError, match="above the limit of 1000 pixels"):
        next(read_frames(source, max_frame_pixels=1000))
    with pytest.raises(VideoReadError, match="4 frames, above the limit of 3"):
        probe_video(source, max_frames=3)


def test_writer_rejects_bad_frames_and_leaves_no_partial_file(tmp_path):
    with pytest.raises(IdgenError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [], 5)
    with pytest.raises(IdgenError, match=r"uint8 \(48, 64, 3\)"):
        write_video(tmp_path / "mixed.mp4", [np.zeros((48, 64, 3), np.uint8), np.zeros((40, 64, 3), np.uint8)], 5)
    with pytest.raises(IdgenError, match="float"):
        write_video(tmp_path / "float.mp4", [np.zeros((48, 64, 3), np.float32)], 5)
    assert not list(tmp_path.iterdir())
    with pytest.raises(IdgenError, match="crf"):
        VideoWriter(tmp_path / "x.mp4", 5, (64, 48), crf=60)
    with pytest.raises(IdgenError, match="with"):
        VideoWriter(tmp_path / "x.mp4", 5, (64, 48)).write(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(RuntimeError), VideoWriter(tmp_path / "crash.mp4", 5, (64, 48)) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8))
        raise RuntimeError("the caller failed midway")
    assert not list(tmp_path.iterdir())


# -- the driver --------------------------------------------------------------------------------


def test_frames_without_faces_pass_through_unchanged(tmp_path):
    source = make_video(tmp_path / "noface.mp4", noise_frames(10))
    decoded, _ = read_video(source)
    calls = []

    def invert(jobs):
        calls.append(jobs)
        return [255 - j.crop for j in jobs]

    report = process_video(source, tmp_path / "out.mp4", invert, analyzer=dlib_faces(), crop_size=64, crf=0,
                           progress=False)
    assert calls == [] and report.frames == 10 and report.frames_passed_through == 10 and report.tracks == 0
    # the output is the very encode of the decoded input: the frames reached the encoder untouched
    write_video(tmp_path / "reference.mp4", decoded, 10, crf=0)
    np.testing.assert_array_equal(read_video(tmp_path / "out.mp4")[0], read_video(tmp_path / "reference.mp4")[0])
    assert audio_of(tmp_path / "out.mp4")[1] == pytest.approx(audio_of(source)[1], abs=1024 / AUDIO_RATE)


def test_a_face_lost_for_two_frames_is_one_interpolated_track(tmp_path):
    source = make_video(tmp_path / "face.mp4", face_frames())
    seen = []

    def process(jobs):
        assert [j.frame_index for j in jobs] == sorted(j.frame_index for j in jobs)
        seen.extend(jobs)
        return [255 - j.crop for j in jobs]

    report = process_video(source, tmp_path / "out.mp4", process, analyzer=dlib_faces(), crop_size=64, batch_size=4,
                           progress=False)
    assert [j.frame_index for j in seen] == list(range(10)) and {j.track_id for j in seen} == {0}
    assert [j.frame_index for j in seen if j.interpolated] == [4, 5] and report.interpolated_faces == 2
    assert all(j.crop.shape == (64, 64, 3) and j.kps_in_crop.shape == (5, 2) for j in seen)
    # the interpolated frames' keypoints lie between their neighbours' (the face drifts right)
    eye_x = [j.track.kps[0, 0] for j in seen]
    assert eye_x[3] < eye_x[4] < eye_x[5] < eye_x[6]
    assert report.tracks == 1 and report.faces_per_frame == [1] * 10 and report.frames_passed_through == 0
    assert any("lost for 2 frames (4-5)" in n for n in report.notes)
    out, _ = read_video(tmp_path / "out.mp4")
    original, _ = read_video(source)
    assert out.shape == original.shape and np.abs(out.astype(int) - original).max() > 100
    assert audio_of(tmp_path / "out.mp4")[1] == pytest.approx(audio_of(source)[1], abs=1024 / AUDIO_RATE)


def test_process_batch_must_return_one_crop_per_job(tmp_path):
    source = make_video(tmp_path / "face.mp4", face_frames(2, blank=()), audio=None)
    with pytest.raises(IdgenError, match="returned 0 crops for 2 jobs"):
        process_video(source, tmp_path / "out.mp4", lambda jobs: [], analyzer=dlib_faces(), crop_size=64, progress=False)
    with pytest.raises(IdgenError, match=r"expected uint8 \(64, 64, 3\)"):
        process_video(source, tmp_path / "out.mp4", lambda jobs: [j.crop / 255.0 for j in jobs], analyzer=dlib_faces(),
                      crop_size=64, progress=False)
    assert not (tmp_path / "out.mp4").exists()


def test_photo_with_two_faces_processes_both_or_the_selected_one():
    portrait = cv2.resize(load_image(SHARED / "faces" / "portrait_glasses.jpg"), (200, 200))
    other = cv2.resize(load_image(SHARED / "faces" / "portrait_older.jpg"), (160, 160))
    photo = np.full((220, 420, 3), 90, np.uint8)
    photo[10:210, 10:210] = portrait
    photo[30:190, 250:410] = other

    def invert(jobs):
        return [255 - j.crop for j in jobs]

    edited, jobs = process_image_faces(photo, invert, analyzer=dlib_faces(), crop_size=64)
    assert [j.track_id for j in jobs] == [0, 1] and jobs[0].track.bbox[0] < jobs[1].track.bbox[0]
    changed = np.abs(edited.astype(int) - photo).max(axis=2) > 60
    assert changed[:, :230].any() and changed[:, 230:].any()
    np.testing.assert_array_equal(edited[:4], photo[:4])  # outside the crops: untouched
    largest, jobs = process_image_faces(photo, invert, analyzer=dlib_faces(), crop_size=64, select="largest")
    assert len(jobs) == 1 and jobs[0].track.bbox[0] < 210
    np.testing.assert_array_equal(largest[:, 230:], photo[:, 230:])
    by_identity, jobs = process_image_faces(photo, invert, analyzer=dlib_faces(), crop_size=64, select="reference",
                                            reference=dlib_faces().get(other))
    assert len(jobs) == 1 and jobs[0].track.bbox[0] > 210
    with pytest.raises(IdgenError, match="select must be"):
        process_image_faces(photo, invert, analyzer=dlib_faces(), select="smallest")
    blank, jobs = process_image_faces(np.full((64, 64, 3), 90, np.uint8), invert, analyzer=dlib_faces())
    assert jobs == [] and (blank == 90).all()


def test_video_face_swap_keeps_length_audio_and_tracks(tmp_path):
    from idgen.pipelines import FaceSwapper
    from test_pva import sd15_pipeline

    source = make_video(tmp_path / "face.mp4", face_frames(6, blank=(3,)))
    swapper = FaceSwapper(sd15_pipeline(), dlib_faces())
    embeds = np.random.default_rng(0).normal(size=(1, 512)).astype(np.float32)
    report = swapper.swap_video(source, tmp_path / "swap.mp4", [embeds], num_inference_steps=2, progress=False)
    info = probe_video(tmp_path / "swap.mp4")
    assert info.num_frames == 6 and info.has_audio and report.tracks == 1
    out, _ = read_video(tmp_path / "swap.mp4")
    original, _ = read_video(source)
    assert np.abs(out.astype(int) - original).max() > 10
    corner = (slice(0, 8), slice(0, 3))  # outside every face crop: untouched (up to H.264)
    assert np.abs(out[:, corner[0], corner[1]].astype(int) - original[:, corner[0], corner[1]]).max() <= 2
