"""Video files with PyAV: probe, stream frames, write H.264 MP4 with the source's audio.

PyAV is the optional extra `idgen[video]`; it is imported when a function here is called.
Frames are RGB uint8 `[H, W, 3]`; times are in seconds; fps is a `fractions.Fraction`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import numpy as np

from .errors import IdgenError, ImageReadError

PathLike = Union[str, os.PathLike]
#: Largest frame accepted (pixels), as `load_image`'s limit: 8K UHD.
MAX_FRAME_PIXELS = 7680 * 4320
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
    """What `probe_video` reads: frame size in pixels, fps, frame count (container's figure, or
    counted when the container has none), duration in seconds, audio presence and the video codec."""

    width: int
    height: int
    fps: Fraction
    num_frames: int
    duration: float
    has_audio: bool
    codec: str


def _open(path: PathLike):
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"video file {str(path)!r} does not exist or is not a file.")
    try:
        container = av.open(str(path))
    except Exception as e:  # PyAV raises many FFmpeg error types for foreign or corrupt files
        raise VideoReadError(f"video file {str(path)!r} could not be opened ({type(e).__name__}: {e}).") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{str(path)!r} has no video stream.")
    return container


def probe_video(path: PathLike, max_frame_pixels: int = MAX_FRAME_PIXELS) -> VideoInfo:
    """Read a video's size, rate, length and streams without decoding it (counts frames only when
    the container does not store the number)."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > max_frame_pixels:
            raise VideoReadError(f"{str(path)!r} has {width}x{height} frames, above the limit of {max_frame_pixels} pixels.")
        fps = Fraction(stream.average_rate or stream.guessed_rate or 25)
        frames = stream.frames or sum(1 for _ in container.decode(video=0))
        duration = float(stream.duration * stream.time_base) if stream.duration else frames / float(fps)
        return VideoInfo(width, height, fps, int(frames), duration, bool(container.streams.audio),
                         stream.codec_context.name)
    finally:
        container.close()


def read_frames(path: PathLike, start: int = 0, max_frames: Optional[int] = None) -> Iterator[np.ndarray]:
    """Decode frames `[H, W, 3]` uint8 RGB one at a time (bounded memory), from index `start`."""
    container = _open(path)
    try:
        for i, frame in enumerate(container.decode(video=0)):
            if i < start:
                continue
            if max_frames is not None and i >= start + max_frames:
                break
            yield frame.to_ndarray(format="rgb24")
    except Exception as e:
        if isinstance(e, (IdgenError, GeneratorExit)):
            raise
        raise VideoReadError(f"decoding {str(path)!r} failed at frame {i} ({type(e).__name__}: {e}).") from None
    finally:
        container.close()


def read_video(path: PathLike) -> tuple[np.ndarray, VideoInfo]:
    """All frames `[T, H, W, 3]` uint8 and the `VideoInfo` (for short clips)."""
    info = probe_video(path)
    frames = list(read_frames(path))
    if not frames:
        raise VideoReadError(f"{str(path)!r} has no decodable frames.")
    info.num_frames = len(frames)
    return np.stack(frames), info


def _even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: an odd width/height gets one more row/column (edge copied)."""
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frame


def write_video(path: PathLike, frames: Iterable[np.ndarray], fps: Union[Fraction, float], *,
                audio_from: Optional[PathLike] = None, crf: int = 18) -> int:
    """Encode `frames` (`[H, W, 3]` uint8 RGB, all the same size) as H.264 (libx264, yuv420p) MP4.

    Args:
        fps: frame rate (a Fraction keeps NTSC rates exact).
        audio_from: a media file whose first audio stream is carried over (packets copied when MP4
            holds the codec, else re-encoded to AAC).
        crf: x264 quality (0 = lossless, 18 = visually lossless, 23 = x264's default).

    Returns:
        The number of frames written. Odd sizes are padded by one pixel (see `_even`).
    """
    av = _av()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fps = Fraction(fps).limit_denominator(100000)
    source = _open(audio_from) if audio_from is not None else None
    out = av.open(str(path), mode="w")
    count = 0
    try:
        video = out.add_stream("libx264", rate=fps)
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(crf)}
        audio_in = source.streams.audio[0] if source is not None and source.streams.audio else None
        audio_out, copy_audio = None, False
        if audio_in is not None:
            copy_audio = audio_in.codec_context.name in MP4_AUDIO
            if copy_audio:
                audio_out = out.add_stream_from_template(audio_in)
            else:
                audio_out = out.add_stream("aac", rate=audio_in.codec_context.sample_rate)
        size = None
        for frame in frames:
            frame = _even(np.ascontiguousarray(frame, dtype=np.uint8))
            if size is None:
                size = frame.shape[:2]
                video.height, video.width = size
            elif frame.shape[:2] != size:
                raise IdgenError(f"frame {count} is {frame.shape[1]}x{frame.shape[0]}, the video is {size[1]}x{size[0]}.")
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
            count += 1
        for packet in video.encode():
            out.mux(packet)
        if audio_out is not None:
            if copy_audio:
                for packet in source.demux(audio_in):
                    if packet.dts is None:
                        continue
                    packet.stream = audio_out
                    out.mux(packet)
            else:
                for frame in source.decode(audio_in):
                    frame.pts = None
                    for packet in audio_out.encode(frame):
                        out.mux(packet)
                for packet in audio_out.encode():
                    out.mux(packet)
    finally:
        out.close()
        if source is not None:
            source.close()
    if count == 0:
        path.unlink(missing_ok=True)
        raise IdgenError("no frames to write.")
    return count
