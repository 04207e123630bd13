"""Temporal windows for restoring clips longer than the UNet's window (SVFR's long-video sampler).

Each denoising step covers the clip with windows of `window` frames overlapping by `overlap`;
every window's result is weighted per position with a triangle (1, 2, ..., peak, ..., 2, 1), and
each frame's blend is divided by its total weight (official `LQ2VideoLongSVDPipeline`). Between
steps the window grid moves by `overlap` frames (1 frame when `overlap` is 0) so no seam stays at
the same frame. Two deliberate differences from the official sampler:

- windows never wrap from the end of the clip back to its start (a real video does not loop, and a
  window holding the last and the first frames shows the temporal layers a jump cut): the grid is
  clipped to the clip and the last window is aligned with its end;
- windows overlap at every step (the official sampler overlaps only in the first 3 steps), so every
  step blends across seams.
"""

from __future__ import annotations

import numpy as np

from idgen.errors import IdgenError


def window_starts(num_frames: int, window: int, overlap: int, shift: int = 0) -> list[int]:
    """First frame of each window of one step, the grid moved back by `shift` frames; together the
    windows (`min(window, num_frames)` frames each) cover every frame."""
    if num_frames < 1:
        raise IdgenError("the clip has no frames.")
    window = min(window, num_frames)
    if not 0 <= overlap < window:
        raise IdgenError(f"overlap must be in [0, window); got overlap {overlap}, window {window}.")
    stride = window - overlap
    starts = []
    for s in range(-(shift % stride), num_frames, stride):
        start = min(max(s, 0), num_frames - window)
        if not starts or start > starts[-1]:
            starts.append(start)
        if start + window >= num_frames:
            break
    return starts


def window_shift(step: int, overlap: int) -> int:
    """How far the grid of denoising step `step` is moved: `step * max(overlap, 1)` frames."""
    return step * max(overlap, 1)


def triangle_weights(window: int) -> np.ndarray:
    """Position weights `[window]`: min(k + 1, window - k) (official)."""
    k = np.arange(window)
    return np.minimum(k + 1, window - k).astype(np.float32)


def frame_weight_sums(num_frames: int, window: int, overlap: int, shift: int = 0) -> np.ndarray:
    """Total (unnormalised) weight each frame receives in one step `[num_frames]`; every entry is
    positive (no frame left out), and the sampler divides by it."""
    window = min(window, num_frames)
    weights = triangle_weights(window)
    total = np.zeros(num_frames, np.float32)
    for start in window_starts(num_frames, window, overlap, shift):
        total[start: start + window] += weights
    return total
