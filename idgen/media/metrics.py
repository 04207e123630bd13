"""Restoration quality figures: PSNR, SSIM, identity similarity, landmark distance and the
temporal (flow-warping) error of a clip.

Images are RGB uint8 `[H, W, 3]`, compared at the same size; every function returns a plain
Python float. Missing faces policy: `identity_similarity` and `landmark_distance` return NaN (never
raise) when either image has no face, so a batch can be averaged with `numpy.nanmean` and the
number of NaNs reported as the detection failures. `psnr` of identical images is `inf`.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import cv2
import numpy as np

from idgen.errors import IdgenError
from idgen.face import get_face_analyzer, identity_similarity as cosine
from idgen.face.tracking import box_iou

#: SSIM constants of Wang et al. 2004: an 11 x 11 Gaussian window of σ = 1.5, K1 = 0.01, K2 = 0.03.
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise IdgenError(f"metrics take uint8 images (0–255); got {a.dtype} and {b.dtype}.")
    if a.shape != b.shape:
        raise IdgenError(f"the images differ in size: {a.shape} vs {b.shape}; resize the restored one to the reference.")
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise IdgenError(f"metrics take RGB [H, W, 3] (or grey [H, W]) images; got {a.shape}.")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB: 10·log10(255² / MSE), the MSE over all pixels and
    channels of the uint8 images; `inf` for identical images (MSE = 0)."""
    a, b = _pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def _ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    c1, c2 = (SSIM_K1 * 255) ** 2, (SSIM_K2 * 255) ** 2

    def window(z):
        return cv2.GaussianBlur(z, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mx, my = window(x), window(y)
    vx, vy, cov = window(x * x) - mx * mx, window(y * y) - my * my, window(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = SSIM_WINDOW // 2  # only positions where the whole window lies inside the image
    return s[pad:-pad, pad:-pad]


def ssim(a: np.ndarray, b: np.ndarray, *, channels: str = "rgb") -> float:
    """Structural similarity (Wang et al. 2004) in [-1, 1] (1 = identical).

    Gaussian window 11 x 11, σ = 1.5, K1 = 0.01, K2 = 0.03, data range 255, population
    (not sample) covariances, averaged over the positions where the window fits inside the
    image — the same figure as skimage's `structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255)` and basicsr's `calculate_ssim`.
    `channels="rgb"` averages the per-channel SSIMs (the BFR papers' setting, basicsr with
    `test_y_channel=False`); `"gray"` uses the BT.601 luminance. Computed here with OpenCV so that
    the figure never depends on whether the optional scikit-image is installed.
    Images must be at least 11 pixels on each side.
    """
    a, b = _pair(a, b)
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise IdgenError(f"SSIM needs images of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels; got {a.shape[:2]}.")
    if channels not in ("rgb", "gray"):
        raise IdgenError(f"channels must be 'rgb' or 'gray', got {channels!r}.")
    if a.ndim == 3 and channels == "gray":
        a, b = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (a, b))
    x, y = a.astype(np.float64), b.astype(np.float64)
    if x.ndim == 2:
        return float(_ssim_map(x, y).mean())
    return float(np.mean([_ssim_map(x[..., c], y[..., c]).mean() for c in range(x.shape[-1])]))


def _default_analyzer(analyzer):
    if analyzer is not None:
        return analyzer

    return get_face_analyzer("dlib")


def _corresponding_faces(a: np.ndarray, b: np.ndarray, analyzer):
    """`a`'s largest face and the face of `b` overlapping it most (any size), or None, None when
    either image has no face (or no face of `b` overlaps `a`'s)."""

    a, b = _pair(a, b)
    analyzer = _default_analyzer(analyzer)
    faces_a, faces_b = analyzer.detect(a), analyzer.detect(b)
    if not faces_a or not faces_b:
        return None, None
    face_a = faces_a[0]
    overlaps = [box_iou(face_a.bbox, f.bbox) for f in faces_b]
    best = int(np.argmax(overlaps))
    return (face_a, faces_b[best]) if overlaps[best] > 0 else (None, None)


def identity_similarity(a: np.ndarray, b: np.ndarray, analyzer=None) -> float:
    """Cosine similarity in [-1, 1] of the identity embeddings of `a`'s largest face and the face
    at the same place in `b` (the one whose box overlaps it most).

    `analyzer`: an `idgen.face.FaceAnalyzer`; default dlib's (128-d ResNet recognition model), a
    network independent of the ArcFace embeddings the restorers are conditioned on. NaN when
    either image has no face or the analyzer gives no embedding.
    """

    fa, fb = _corresponding_faces(a, b, analyzer)
    if fa is None or fa.embedding is None or fb.embedding is None:
        return math.nan
    return float(cosine(fa.embedding, fb.embedding))


def landmark_distance(a: np.ndarray, b: np.ndarray, analyzer=None) -> float:
    """Normalised mean landmark error (lower is better; 0 for identical images).

    The mean Euclidean distance between corresponding landmarks of `a`'s largest face and the face
    at the same place in `b` — the dense landmarks when both have the same number (dlib: 68), else
    the 5 keypoints — divided by the inter-ocular distance of `a`'s face, measured between the eye
    centres (keypoints 0 and 1, so the figure is comparable across backends). `analyzer` as in
    `identity_similarity` (default dlib). NaN when either image has no face.
    """
    fa, fb = _corresponding_faces(a, b, analyzer)
    if fa is None:
        return math.nan
    dense = fa.landmarks is not None and fb.landmarks is not None and fa.landmarks.shape == fb.landmarks.shape
    pa, pb = (fa.landmarks, fb.landmarks) if dense else (fa.kps, fb.kps)
    ocular = float(np.linalg.norm(fa.kps[0].astype(np.float64) - fa.kps[1]))
    if ocular <= 0:
        return math.nan
    return float(np.linalg.norm(pa.astype(np.float64) - pb, axis=1).mean() / ocular)


def _flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Dense Farneback flow `[H, W, 2]` (pixels) from RGB `source` to `target`: source(p) ≈ target(p + flow(p))."""
    g0, g1 = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (source, target))
    return cv2.calcOpticalFlowFarneback(g0, g1, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def _warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """`image` sampled at p + flow(p) (bilinear, borders replicated)."""
    h, w = flow.shape[:2]
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), -1)
    mapped = grid + flow
    return cv2.remap(image, mapped[..., 0], mapped[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _clip(frames, name: str) -> np.ndarray:
    clip = np.asarray(frames)
    if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[-1] != 3:
        raise IdgenError(f"{name} must be uint8 RGB frames [T, H, W, 3]; got {clip.dtype} {tuple(clip.shape)}.")
    return clip


def temporal_consistency(frames: Sequence[np.ndarray], reference: Optional[Sequence[np.ndarray]] = None) -> float:
    """Flow-warping error of a clip, in 0–255 units (lower is steadier; 0 for a static clip).

    For each pair of consecutive frames (t, t+1): the Farneback optical flow from frame t to t+1
    of the `reference` clip (the clean video; without one, of `frames` itself) warps frame t+1 of
    `frames` back onto frame t, and the error is the mean absolute difference to frame t over the
    pixels and channels that the flow sees in both frames (not occluded: the forward-backward
    check |w + ŵ|² <= 0.01 (|w|² + |ŵ|²) + 0.5 of Sundaram et al. 2010, as in Lai et al. 2018's
    warping error). The figure is the mean over the T-1 pairs (pairs where the check leaves no
    pixel are skipped; NaN if that is every pair); 0.0 for fewer than 2 frames.
    Content motion is explained by the flow, so what remains is flicker: brightness or detail
    changing from frame to frame where the reference does not. Compare a restored clip with its
    clean reference's own figure, `temporal_consistency(reference)`.
    """
    clip = _clip(frames, "frames")
    source = clip if reference is None else _clip(reference, "reference")
    if source.shape != clip.shape:
        raise IdgenError(f"reference is {source.shape}, the clip {clip.shape}; they must match frame for frame.")
    errors = []
    for t in range(len(clip) - 1):
        forward, backward = _flow(source[t], source[t + 1]), _flow(source[t + 1], source[t])
        back_at_target = _warp(backward, forward)
        visible = (np.sum((forward + back_at_target) ** 2, -1)
                   <= 0.01 * (np.sum(forward ** 2, -1) + np.sum(back_at_target ** 2, -1)) + 0.5)
        if not visible.any():
            continue
        diff = np.abs(_warp(clip[t + 1], forward).astype(np.float64) - clip[t].astype(np.float64)).mean(-1)
        errors.append(float(diff[visible].mean()))
    if len(clip) < 2:
        return 0.0
    return float(np.mean(errors)) if errors else math.nan
