"""Restoration quality figures: PSNR, SSIM, identity similarity, landmark distance, temporal
consistency. Images are RGB uint8 `[H, W, 3]` of the same size; every function returns a float
(NaN where a face needed by the figure is not found — never an exception for that)."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import cv2
import numpy as np

from .errors import FaceNotFoundError, IdgenError


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise IdgenError(f"the images differ in size: {a.shape} vs {b.shape}.")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (peak 255); inf for identical images."""
    a, b = _pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004) on the luminance: 11x11 Gaussian window σ = 1.5,
    K1 = 0.01, K2 = 0.03, data range 255 — the standard settings (skimage's
    `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`);
    written with OpenCV so it needs no test-only dependency."""
    a, b = _pair(a, b)
    if a.ndim == 3:
        a, b = (cv2.cvtColor(x.astype(np.uint8), cv2.COLOR_RGB2GRAY) for x in (a, b))
    x, y = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z):
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = 5  # skimage crops the window's half width at the border
    return float(s[pad:-pad, pad:-pad].mean())


def _face(image: np.ndarray, analyzer):
    try:
        return analyzer.get(image, select="largest", min_size=0)
    except FaceNotFoundError:
        return None


def identity_similarity(a: np.ndarray, b: np.ndarray, analyzer) -> float:
    """Cosine similarity of the largest faces' identity embeddings (by `analyzer`: use a model
    independent of the restorer; dlib's by default in `idgen eval restore`). NaN without faces."""
    from .face import identity_similarity as cosine

    fa, fb = _face(a, analyzer), _face(b, analyzer)
    if fa is None or fb is None or fa.embedding is None or fb.embedding is None:
        return math.nan
    return float(cosine(fa.embedding, fb.embedding))


def landmark_distance(a: np.ndarray, b: np.ndarray, analyzer) -> float:
    """Mean distance between the two faces' landmarks (68 with dlib, else the 5 keypoints),
    divided by the inter-ocular distance of `a`'s face. NaN without faces."""
    fa, fb = _face(a, analyzer), _face(b, analyzer)
    if fa is None or fb is None:
        return math.nan
    use_dense = fa.landmarks is not None and fb.landmarks is not None and len(fa.landmarks) == len(fb.landmarks)
    pa, pb = (fa.landmarks, fb.landmarks) if use_dense else (fa.kps, fb.kps)
    ocular = float(np.linalg.norm(np.asarray(fa.kps[0]) - np.asarray(fa.kps[1])))
    return float(np.linalg.norm(np.asarray(pa, np.float64) - np.asarray(pb, np.float64), axis=1).mean() / max(ocular, 1e-6))


def temporal_consistency(frames: Sequence[np.ndarray], reference: Optional[Sequence[np.ndarray]] = None) -> float:
    """Flow-warping error (lower is steadier), in 0–255 units.

    For each pair of consecutive frames, the optical flow (OpenCV Farneback) of the `reference`
    clip (the clean one; else of `frames` itself) warps frame t+1 onto frame t, and the mean
    absolute difference to frame t is taken; the figure is the mean over pairs. A static clip
    scores 0; flicker the reference does not have raises it.
    """
    frames = [np.asarray(f) for f in frames]
    flow_source = [np.asarray(f) for f in (reference if reference is not None else frames)]
    if len(frames) < 2:
        return 0.0
    if len(flow_source) != len(frames):
        raise IdgenError(f"reference has {len(flow_source)} frames, the clip {len(frames)}.")
    h, w = frames[0].shape[:2]
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).astype(np.float32)
    errors = []
    for t in range(len(frames) - 1):
        g0, g1 = (cv2.cvtColor(flow_source[i], cv2.COLOR_RGB2GRAY) for i in (t, t + 1))
        flow = cv2.calcOpticalFlowFarneback(g0, g1, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        mapped = grid + flow
        warped = cv2.remap(frames[t + 1], mapped[..., 0], mapped[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        errors.append(float(np.abs(warped.astype(np.float64) - frames[t].astype(np.float64)).mean()))
    return float(np.mean(errors))
