"""Video files with PyAV: probe, stream frames, write H.264 MP4 that keeps the source's audio.

PyAV is the optional extra `idgen[video]`; it is imported when a function here is called.
Frames are RGB uint8 `[H, W, 3]` as displayed (a rotation stored in the file's display matrix,
as phones write it, is applied on reading; flips are not); times are in seconds; fps is a
`fractions.Fraction`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import numpy as np

from idgen.errors import IdgenError, ImageReadError
from idgen.image_io import check_regular_file

PathLike = Union[str, os.PathLike]
#: Largest frame accepted (pixels), as `load_image`'s limit: 8K UHD.
MAX_FRAME_PIXELS = 7680 * 4320
#: Longest video accepted (frames): one hour at 30 fps. Cut longer videos into parts.
MAX_FRAMES = 108_000
#: Most bytes `read_video` loads into one array; longer clips are streamed with `read_frames`.
MAX_READ_BYTES = 4 << 30
#: Audio codecs MP4 carries as they are (packets are copied); others are re-encoded to AAC.
MP4_AUDIO = ("aac", "mp3")


class VideoReadError(ImageReadError):
    """A video file is missing, unreadable, has no video stream, or is over the limits."""


def _av():
    try:
        import av
    except ImportError:
        raise IdgenError("video needs PyAV: pip install 'idgen[video]' (or pip install av).") from None
    return av


@dataclass
class VideoInfo:
    """What `probe_video` reads: displayed frame size in pixels, fps, frame count, duration in
    seconds, audio presence and the video codec's name."""

    width: int
    height: int
    fps: Fraction
    num_frames: int
    duration: float
    has_audio: bool
    codec: str


def _open(path: PathLike):
    """The PyAV input container of `path`, which must hold a video stream FFmpeg can decode."""
    av = _av()
    path = Path(path)
    check_regular_file(path, f"video file {str(path)!r}", VideoReadError)
    try:
        container = av.open(str(path))
    except Exception as e:  # PyAV raises many FFmpeg error types for foreign or corrupt files
        raise VideoReadError(f"video file {str(path)!r} could not be opened ({type(e).__name__}: {e}).") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{str(path)!r} has no video stream.")
    if container.streams.video[0].codec_context is None:
        container.close()
        raise VideoReadError(f"{str(path)!r}: its video stream's codec is unknown or damaged; re-encode it (e.g. to H.264).")
    return container


def _check_pixels(path: PathLike, width: int, height: int, max_frame_pixels: int) -> None:
    if width * height > max_frame_pixels:
        raise VideoReadError(f"{str(path)!r} has {width}x{height} frames, above the limit of {max_frame_pixels} "
                             "pixels; downscale it first (or raise max_frame_pixels).")


def _upright(frame) -> np.ndarray:
    """The decoded PyAV frame as displayed: RGB `[H, W, 3]`, rotated by its display matrix
    (`frame.rotation`: degrees counter-clockwise, multiples of 90)."""
    pixels = frame.to_ndarray(format="rgb24")
    quarter_turns = round(frame.rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(pixels, quarter_turns)) if quarter_turns else pixels


def probe_video(path: PathLike, max_frame_pixels: int = MAX_FRAME_PIXELS, max_frames: int = MAX_FRAMES) -> VideoInfo:
    """Size, rate, length and streams of a video. Decodes only the first frame (for its rotation);
    counts packets when the container does not store the number of frames.

    Raises:
        VideoReadError: missing, corrupt or non-video file; frames over `max_frame_pixels`;
            more than `max_frames` frames.
    """
    container = _open(path)
    try:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        _check_pixels(path, width, height, max_frame_pixels)
        fps = Fraction(stream.average_rate or stream.guessed_rate or 25)
        try:
            first = next(container.decode(video=0), None)
        except Exception as e:
            raise VideoReadError(f"{str(path)!r}: the first frame could not be decoded ({type(e).__name__}: {e})."
                                 ) from None
        if first is None:
            raise VideoReadError(f"{str(path)!r} has no decodable frames.")
        if round(first.rotation / 90) % 2:
            width, height = height, width
        frames = stream.frames
        if not frames:
            container.seek(0)
            frames = sum(1 for packet in container.demux(stream) if packet.size)
        if frames > max_frames:
            raise VideoReadError(f"{str(path)!r} has {frames} frames, above the limit of {max_frames}; "
                                 "cut it into parts (or raise max_frames).")
        if stream.duration:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = frames / float(fps)
        return VideoInfo(width, height, fps, int(frames), duration, bool(container.streams.audio),
                         stream.codec_context.name)
    finally:
        container.close()


def read_frames(path: PathLike, start: int = 0, max_frames: Optional[int] = None,
                max_frame_pixels: int = MAX_FRAME_PIXELS) -> Iterator[np.ndarray]:
    """Decode frames `[H, W, 3]` uint8 RGB one at a time (bounded memory), from index `start`.

    Frames before `start` are decoded and dropped (exact for variable frame rates, unlike seeking).
    """
    container = _open(path)
    index = start - 1
    try:
        stream = container.streams.video[0]
        _check_pixels(path, stream.codec_context.width, stream.codec_context.height, max_frame_pixels)
        for index, frame in enumerate(container.decode(video=0)):
            if index < start:
                continue
            if max_frames is not None and index >= start + max_frames:
                break
            yield _upright(frame)
    except Exception as e:
        if isinstance(e, (IdgenError, GeneratorExit)):
            raise
        raise VideoReadError(f"decoding {str(path)!r} failed after frame {index} ({type(e).__name__}: {e}).") from None
    finally:
        container.close()


def read_video(path: PathLike) -> tuple[np.ndarray, VideoInfo]:
    """All frames `[T, H, W, 3]` uint8 and the `VideoInfo` (for short clips: over
    `MAX_READ_BYTES` of pixels is refused, use `read_frames`)."""
    info = probe_video(path)
    if info.num_frames * info.width * info.height * 3 > MAX_READ_BYTES:
        raise VideoReadError(f"{str(path)!r}: {info.num_frames} frames of {info.width}x{info.height} do not fit "
                             f"in {MAX_READ_BYTES >> 30} GiB; stream them with read_frames.")
    frames = list(read_frames(path))
    if not frames:
        raise VideoReadError(f"{str(path)!r} has no decodable frames.")
    info.num_frames = len(frames)
    return np.stack(frames), info


class VideoWriter:
    """Write RGB frames as an H.264 (libx264, yuv420p) MP4, with the audio of another file.

    A context manager: frames go in with `write`; on a clean exit the encoder is flushed and the
    rest of the audio is written; on an exception the partial file is deleted.

    Args:
        path: the .mp4 to write (folders are created).
        fps: frame rate (a Fraction keeps NTSC rates such as 30000/1001 exact).
        size: `(width, height)` of the frames in pixels. yuv420p needs even sizes: an odd width or
            height gets one more column/row copied from the edge, so the file is up to one pixel
            larger than the frames (no pixel is lost, unlike cropping).
        audio_from: a media file whose first audio stream is carried over, with its duration:
            packets are copied when MP4 holds the codec (`MP4_AUDIO`), else decoded and re-encoded
            to AAC. Audio is interleaved with the video as frames are written.
        crf: x264 quality (0 = lossless in YUV, 18 = visually lossless, 23 = x264's default).
        provenance: an `idgen.provenance.Provenance`: every frame is watermarked with its id
            before encoding and the manifest goes into the MP4 metadata (`description`: the
            manifest JSON, `comment`: a one-line AI-generated label).
    """

    def __init__(self, path: PathLike, fps: Union[Fraction, float], size: tuple[int, int], *,
                 audio_from: Optional[PathLike] = None, crf: int = 18, provenance=None):
        width, height = (int(v) for v in size)
        if width <= 0 or height <= 0:
            raise IdgenError(f"video size must be positive (width, height), got {size}.")
        if not 0 <= crf <= 51:
            raise IdgenError(f"crf must be in [0, 51], got {crf}.")
        if not float(fps) > 0:
            raise IdgenError(f"fps must be positive, got {fps}.")
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(100000)
        self.size = (width, height)
        self.audio_from = audio_from
        self.crf = crf
        self.provenance = provenance
        self.frames_written = 0
        self._out = self._video = self._source = self._audio = self._pending = None

    def __enter__(self) -> "VideoWriter":
        av = _av()
        self._source = _open_audio(self.audio_from) if self.audio_from is not None else None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = av.open(str(self.path), mode="w", options={"movflags": "+faststart"})
            self._video = self._out.add_stream("libx264", rate=self.fps)
            self._video.pix_fmt = "yuv420p"
            self._video.width, self._video.height = (v + v % 2 for v in self.size)
            self._video.options = {"crf": str(self.crf)}
            if self.provenance is not None:
                from idgen.provenance.metadata import video_metadata

                self._out.metadata.update(video_metadata(self.provenance))
            if self._source is not None and self._source.streams.audio:
                self._audio = _carry_audio(self._source, self._out)
        except BaseException:
            self._abort()
            raise
        return self

    def write(self, frame: np.ndarray) -> None:
        """Encode one frame `[H, W, 3]` uint8 RGB of the writer's size."""
        av = _av()
        if self._out is None:
            raise IdgenError("VideoWriter writes inside its `with` block only.")
        frame = np.asarray(frame)
        width, height = self.size
        if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
            raise IdgenError(f"frame {self.frames_written} is {frame.dtype} {tuple(frame.shape)}; this video takes "
                             f"uint8 ({height}, {width}, 3) RGB frames.")
        if self.provenance is not None:
            from idgen.provenance.watermark import watermark_frame

            frame = watermark_frame(frame, self.provenance.id)
        if height % 2 or width % 2:
            frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        for packet in self._video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            self._out.mux(packet)
        self.frames_written += 1
        self._mux_audio(until=self.frames_written / self.fps)

    def _mux_audio(self, until: Optional[Fraction]) -> None:
        """Write the audio packets that start before `until` seconds (all of them for None)."""
        while self._audio is not None:
            if self._pending is None:
                self._pending = next(self._audio, None)
                if self._pending is None:
                    self._audio = None
                    return
            packet = self._pending
            if until is not None and packet.pts is not None and packet.pts * packet.time_base >= until:
                return
            self._out.mux(packet)
            self._pending = None

    def _finish(self) -> None:
        """Flush the encoder, write the remaining audio and close the files."""
        try:
            if self.frames_written == 0:
                raise IdgenError("no frames to write.")
            for packet in self._video.encode():
                self._out.mux(packet)
            self._mux_audio(until=None)
        except BaseException:
            self._abort()
            raise
        self._release()

    def _release(self) -> None:
        for container in (self._out, self._source):
            if container is not None:
                container.close()
        self._out = self._video = self._source = self._audio = self._pending = None

    def _abort(self) -> None:
        try:
            self._release()
        finally:
            self.path.unlink(missing_ok=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._finish()
        else:
            self._abort()


def _open_audio(path: PathLike):
    """The PyAV input container of a media file the audio is taken from (video not required)."""
    av = _av()
    if not Path(path).is_file():
        raise VideoReadError(f"audio source {str(path)!r} does not exist or is not a file.")
    try:
        return av.open(str(path))
    except Exception as e:
        raise VideoReadError(f"audio source {str(path)!r} could not be opened ({type(e).__name__}: {e}).") from None


def _carry_audio(source, out) -> Iterator:
    """Add an audio stream to `out` (now: streams must exist before the first packet is written)
    and return its packets, in order, from `source`'s first audio stream: copied when MP4 holds
    the codec, else re-encoded to AAC, mono or stereo (more channels are downmixed: their layouts
    are often unnamed, which the AAC encoder refuses); the decoded timestamps are kept, so the
    audio keeps its offset and duration."""
    audio_in = source.streams.audio[0]
    if audio_in.codec_context.name in MP4_AUDIO:
        audio_out = out.add_stream_from_template(audio_in)

        def copied():
            for packet in source.demux(audio_in):
                if packet.dts is None:  # the demuxer's empty end-of-stream packet
                    continue
                packet.stream = audio_out
                yield packet

        return copied()
    context = audio_in.codec_context
    layout = "mono" if context.layout.nb_channels == 1 else "stereo"
    audio_out = out.add_stream("aac", rate=context.sample_rate, layout=layout)

    def encoded():
        for frame in source.decode(audio_in):
            yield from audio_out.encode(frame)
        yield from audio_out.encode()

    return encoded()


def write_video(path: PathLike, frames: Iterable[np.ndarray], fps: Union[Fraction, float], *,
                audio_from: Optional[PathLike] = None, crf: int = 18, provenance=None) -> int:
    """Encode `frames` (`[H, W, 3]` uint8 RGB, all the size of the first) with a `VideoWriter`
    (`provenance`: watermark the frames and write the manifest, see `VideoWriter`); returns the
    number of frames written."""
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise IdgenError("no frames to write.")
    first = np.asarray(first)
    if first.ndim != 3:
        raise IdgenError(f"frames must be [H, W, 3] uint8 RGB, got shape {tuple(first.shape)}.")
    with VideoWriter(path, fps, (first.shape[1], first.shape[0]), audio_from=audio_from, crf=crf,
                     provenance=provenance) as writer:
        writer.write(first)
        for frame in frames:
            writer.write(frame)
    return writer.frames_written
