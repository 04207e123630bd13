"""Synthetic degradations for blind face restoration (BFR), colorization and inpainting.

The blind model is y = JPEG_q[(x ⊛ k_σ)↓r + n_δ]↑r, in the order and with the operations of
GFPGAN's `gfpgan/data/ffhq_degradation_dataset.py` (kernels and noise from basicsr's
`basicsr/data/degradations.py`) and CodeFormer's `basicsr/data/ffhq_blind_dataset.py`, on float
images in [0, 1]:

1. blur with a `kernel_size`² Gaussian kernel, isotropic (σ) or anisotropic (σx, σy, angle θ ∈ [-π, π]),
   `cv2.filter2D` with reflect-101 borders;
2. downsample by r to `(⌊W / r⌋, ⌊H / r⌋)`, bilinear;
3. add Gaussian noise of standard deviation δ (0–255 units), independent per pixel and channel,
   clip to [0, 1];
4. JPEG-compress at quality q (OpenCV, 4:2:0), where q = ⌊U(q_min, q_max)⌋ as in both repos;
5. resize back to `(W, H)`, bilinear (both repos use `cv2.INTER_LINEAR` both ways);
6. with `color_jitter_prob`: add a per-channel shift U(-s, s) (0–255 units), clip;
7. with `gray_prob`: replace by the luminance;
8. with `photometric_prob` (GFPGAN's `color_jitter_pt`): brightness, contrast, saturation and hue
   factors applied in a random order, torchvision's definitions;
9. round to uint8.

Images are RGB uint8 `[H, W, 3]`; clips `[T, H, W, 3]` share one parameter draw (the noise is a
new sample per frame, as a camera's would be), optionally jittered per frame (`frame_jitter`).
Every random choice comes from one `numpy.random.Generator` (`seed` or `rng`): the same seed gives
bit-identical output, and the drawn parameters come back in `Degraded.params` for logging.
The draws are made in a fixed order (blind parameters, per-frame jitter, noise, then the mask), so
adding "colorize" or "inpaint" to a task set leaves its blind degradation unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Optional, Sequence, Union

import numpy as np

from idgen.errors import IdgenError

TASKS = ("bfr", "colorize", "inpaint")
MASK_KINDS = ("brush", "box")
#: The value painted into the inpainting region: white, as CodeFormer's `brush_stroke_mask` and
#: SVFR's inference paint it.
MASK_FILL = 255
PHOTOMETRIC_OPS = ("brightness", "contrast", "saturation", "hue")

Range = tuple[float, float]
RandomSource = Union[int, np.integer, np.random.Generator]


def _check_range(name: str, value, lo: float, hi: float, *, open_lo: bool = False) -> None:
    """`value` must be a pair a <= b inside [lo, hi] (or (lo, hi] with `open_lo`)."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise IdgenError(f"{name} must be a (min, max) pair of numbers, got {value!r}.") from None
    low_ok = a > lo if open_lo else a >= lo
    if not (low_ok and a <= b <= hi):
        bracket = "(" if open_lo else "["
        raise IdgenError(f"{name} must satisfy min <= max inside {bracket}{lo}, {hi}]; got {value!r}.")


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise IdgenError(f"{name} must be a probability in [0, 1], got {value!r}.")


def _check_kernel_size(size) -> None:
    if not isinstance(size, (int, np.integer)) or size < 3 or size % 2 == 0:
        raise IdgenError(f"kernel size must be an odd integer >= 3, got {size!r}.")


@dataclass(frozen=True)
class DegradationPreset:
    """Ranges of the blind degradation; every value is drawn uniformly from its range.

    Units: σ in pixels, r a size factor (> 1 shrinks), noise δ a standard deviation in 0–255 units,
    JPEG quality 1–100, colour shift in 0–255 units, photometric factors as in torchvision
    (brightness/contrast/saturation multiply, 1 = unchanged; hue is a fraction of the colour
    circle, 0 = unchanged). The defaults are GFPGAN's (`options/train_gfpgan_v1.yml`).
    Out-of-range values raise `IdgenError`.
    """

    kernel_size: int = 41
    kernel_probs: tuple[float, float] = (0.5, 0.5)  # (isotropic, anisotropic)
    blur_sigma: Range = (0.1, 10.0)
    downsample: Range = (0.8, 8.0)
    noise: Range = (0.0, 20.0)
    jpeg_quality: Range = (60, 100)
    color_jitter_prob: float = 0.3
    color_jitter_shift: float = 20.0
    gray_prob: float = 0.01
    photometric_prob: float = 0.3
    brightness: Range = (0.5, 1.5)
    contrast: Range = (0.5, 1.5)
    saturation: Range = (0.0, 1.5)
    hue: Range = (-0.1, 0.1)

    def __post_init__(self):
        _check_kernel_size(self.kernel_size)
        probs = tuple(float(p) for p in self.kernel_probs)
        if len(probs) != 2 or min(probs) < 0 or sum(probs) <= 0:
            raise IdgenError(f"kernel_probs must be two non-negative weights (iso, aniso), not both 0; "
                             f"got {self.kernel_probs!r}.")
        _check_range("blur_sigma", self.blur_sigma, 0.0, 100.0, open_lo=True)
        _check_range("downsample", self.downsample, 0.0, 256.0, open_lo=True)
        _check_range("noise", self.noise, 0.0, 255.0)
        _check_range("jpeg_quality", self.jpeg_quality, 1, 100)
        for name in ("color_jitter_prob", "gray_prob", "photometric_prob"):
            _check_prob(name, getattr(self, name))
        if not 0.0 <= float(self.color_jitter_shift) <= 255.0:
            raise IdgenError(f"color_jitter_shift must be in [0, 255], got {self.color_jitter_shift!r}.")
        for name in ("brightness", "contrast", "saturation"):
            _check_range(name, getattr(self, name), 0.0, 10.0)
        _check_range("hue", self.hue, -0.5, 0.5)


#: Published ranges. "gfpgan": `options/train_gfpgan_v1.yml` (GFPGAN). "codeformer": the heavy
#: degradation of CodeFormer's `options/CodeFormer_stage2.yml` (and the `*_large` ranges of
#: `CodeFormer_stage3.yml`); "codeformer-light": the small ranges of `CodeFormer_stage3.yml`.
#: CodeFormer's stage 2/3 configs use no colour jitter and no greyscale.
PRESETS: dict[str, DegradationPreset] = {
    "gfpgan": DegradationPreset(),
    "codeformer": DegradationPreset(blur_sigma=(1.0, 15.0), downsample=(4.0, 30.0), noise=(0.0, 20.0), jpeg_quality=(30, 80),
                                    color_jitter_prob=0.0, gray_prob=0.0, photometric_prob=0.0),
    "codeformer-light": DegradationPreset(blur_sigma=(0.1, 10.0), downsample=(1.0, 12.0), noise=(0.0, 15.0),
                                          jpeg_quality=(60, 100), color_jitter_prob=0.0, gray_prob=0.0, photometric_prob=0.0),
}


def get_preset(preset: Union[str, DegradationPreset]) -> DegradationPreset:
    """The preset named `preset` in `PRESETS` (or `preset` itself); IdgenError listing the names."""
    if isinstance(preset, DegradationPreset):
        return preset
    if not isinstance(preset, str) or preset not in PRESETS:
        raise IdgenError(f"unknown degradation preset {preset!r}; choose one of: {', '.join(PRESETS)}.")
    return PRESETS[preset]


@dataclass(frozen=True)
class BlindParams:
    """One draw of the blind degradation (units as in `DegradationPreset`; `angle` in radians).

    `photometric` is the ordered list of (operation, factor) pairs applied, or None."""

    kernel: str
    sigma_x: float
    sigma_y: float
    angle: float
    downsample: float
    noise: float
    jpeg_quality: int
    kernel_size: int = 41
    color_shift: Optional[tuple[float, float, float]] = None
    gray: bool = False
    photometric: Optional[tuple[tuple[str, float], ...]] = None

    def __post_init__(self):
        if self.kernel not in ("iso", "aniso"):
            raise IdgenError(f"kernel must be 'iso' or 'aniso', got {self.kernel!r}.")
        _check_kernel_size(self.kernel_size)
        if not (self.sigma_x > 0 and self.sigma_y > 0):
            raise IdgenError(f"blur sigmas must be > 0, got ({self.sigma_x}, {self.sigma_y}).")
        if not self.downsample > 0:
            raise IdgenError(f"downsample must be > 0, got {self.downsample}.")
        if not 0 <= self.noise <= 255:
            raise IdgenError(f"noise must be in [0, 255], got {self.noise}.")
        if not 1 <= self.jpeg_quality <= 100:
            raise IdgenError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}.")
        if self.color_shift is not None and len(self.color_shift) != 3:
            raise IdgenError(f"color_shift must have 3 values (R, G, B), got {self.color_shift!r}.")
        for op, _ in self.photometric or ():
            if op not in PHOTOMETRIC_OPS:
                raise IdgenError(f"unknown photometric operation {op!r}; choose from {PHOTOMETRIC_OPS}.")


@dataclass
class Degraded:
    """The result of `degrade`.

    Attributes:
        image: uint8 RGB, the input's shape (`[H, W, 3]` or `[T, H, W, 3]`).
        params: JSON-ready record of the draw: "tasks"; with "bfr": "preset" (a name or the
            ranges) and "bfr" (the `BlindParams` as a dict), plus "frames" (one dict per frame)
            when `frame_jitter` > 0; with "inpaint": "mask" ({"kind", "coverage"}).
        mask: the inpainting mask `[H, W]` float32 in {0, 1} (1 = region to fill, shared by every
            frame), or None without the "inpaint" task.
    """

    image: np.ndarray
    params: dict
    mask: Optional[np.ndarray] = None


def _generator(rng: RandomSource) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise IdgenError(f"expected an integer seed or a numpy.random.Generator, got {type(rng).__name__}.")


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, angle: float) -> np.ndarray:
    """A `size` x `size` float32 Gaussian kernel summing to 1: standard deviations `sigma_x`,
    `sigma_y` (pixels) along the x and y axes turned by `angle` (radians, from the x axis towards
    the y axis of the pixel grid), i.e. covariance R(θ) diag(σx², σy²) R(θ)ᵀ as in basicsr's
    `bivariate_Gaussian`; `sigma_x == sigma_y` is isotropic."""
    _check_kernel_size(size)
    if not (sigma_x > 0 and sigma_y > 0):
        raise IdgenError(f"blur sigmas must be > 0, got ({sigma_x}, {sigma_y}).")
    half = size // 2
    y, x = np.mgrid[-half: half + 1, -half: half + 1].astype(np.float64)
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * x + s * y, -s * x + c * y  # coordinates along the kernel's own axes
    kernel = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (kernel / kernel.sum()).astype(np.float32)


def draw_params(preset: Union[str, DegradationPreset], rng: RandomSource) -> BlindParams:
    """One draw of the blind degradation from `preset` (a name or a `DegradationPreset`)."""
    p, rng = get_preset(preset), _generator(rng)
    aniso = bool(rng.uniform() < p.kernel_probs[1] / sum(p.kernel_probs))
    sigma_x = float(rng.uniform(*p.blur_sigma))
    sigma_y = float(rng.uniform(*p.blur_sigma)) if aniso else sigma_x
    angle = float(rng.uniform(-math.pi, math.pi)) if aniso else 0.0
    downsample = float(rng.uniform(*p.downsample))
    noise = float(rng.uniform(*p.noise))
    quality = int(rng.uniform(*p.jpeg_quality))  # basicsr/CodeFormer: int(uniform(q_min, q_max))
    shift = None
    if rng.uniform() < p.color_jitter_prob:
        shift = tuple(float(v) for v in rng.uniform(-p.color_jitter_shift, p.color_jitter_shift, 3))
    gray = bool(rng.uniform() < p.gray_prob)
    photometric = None
    if rng.uniform() < p.photometric_prob:
        photometric = tuple((PHOTOMETRIC_OPS[i], float(rng.uniform(*getattr(p, PHOTOMETRIC_OPS[i]))))
                            for i in rng.permutation(len(PHOTOMETRIC_OPS)))
    return BlindParams(kernel="aniso" if aniso else "iso", sigma_x=sigma_x, sigma_y=sigma_y, angle=angle,
                       downsample=downsample, noise=noise, jpeg_quality=quality, kernel_size=p.kernel_size,
                       color_shift=shift, gray=gray, photometric=photometric)


def jitter_params(params: BlindParams, preset: Union[str, DegradationPreset], amount: float,
                  rng: RandomSource) -> BlindParams:
    """`params` with σx, σy, r, δ and q each moved by U(-amount, amount) x (its preset range's
    width), clipped to the range; the angle by U(-amount, amount) x π. Kernel type, colour and
    greyscale choices are kept. For per-frame variation within a clip."""
    if not 0.0 <= amount <= 1.0:
        raise IdgenError(f"frame_jitter must be in [0, 1], got {amount!r}.")
    p, rng = get_preset(preset), _generator(rng)

    def move(value, bounds):
        lo, hi = bounds
        return float(np.clip(value + rng.uniform(-amount, amount) * (hi - lo), lo, hi))

    sigma_x = move(params.sigma_x, p.blur_sigma)
    sigma_y = move(params.sigma_y, p.blur_sigma) if params.kernel == "aniso" else sigma_x
    angle = params.angle + float(rng.uniform(-amount, amount)) * math.pi if params.kernel == "aniso" else params.angle
    return replace(params, sigma_x=sigma_x, sigma_y=sigma_y, angle=angle, downsample=move(params.downsample, p.downsample),
                   noise=move(params.noise, p.noise), jpeg_quality=int(round(move(params.jpeg_quality, p.jpeg_quality))))


def _luma(x: np.ndarray) -> np.ndarray:
    """BT.601 luminance `[..., H, W]` of RGB `[..., H, W, 3]` (OpenCV's RGB2GRAY weights)."""
    import cv2  # lazy (here and below): the CLI's parsers read PRESETS, and `idgen --help` stays under 1.5 s

    flat = x.reshape(-1, x.shape[-2], 3)
    return cv2.cvtColor(np.ascontiguousarray(flat), cv2.COLOR_RGB2GRAY).reshape(x.shape[:-1])


def _photometric(x: np.ndarray, ops: Sequence[tuple[str, float]]) -> np.ndarray:
    """torchvision's `adjust_brightness/contrast/saturation/hue` on float RGB [0, 1], in order.
    Written with OpenCV because torchvision is not a dependency."""
    import cv2

    for op, factor in ops:
        if op == "brightness":
            x = x * factor
        elif op == "contrast":
            x = factor * x + (1.0 - factor) * float(_luma(x).mean())
        elif op == "saturation":
            x = factor * x + (1.0 - factor) * _luma(x)[..., None]
        else:  # hue: rotate the HSV hue by `factor` turns
            hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
            hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * factor, 360.0)
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        x = np.clip(x, 0.0, 1.0).astype(np.float32)
    return x


def apply_blind(image: np.ndarray, params: BlindParams, rng: RandomSource) -> np.ndarray:
    """The blind degradation `params` of one RGB uint8 image `[H, W, 3]` (steps 1–9 of the module
    docstring); `rng` draws the noise. Returns uint8 `[H, W, 3]`."""
    import cv2

    rng = _generator(rng)
    h, w = image.shape[:2]
    x = image.astype(np.float32) / 255.0
    kernel = gaussian_kernel(params.kernel_size, params.sigma_x, params.sigma_y, params.angle)
    x = cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    size = (max(1, int(w // params.downsample)), max(1, int(h // params.downsample)))
    x = cv2.resize(x, size, interpolation=cv2.INTER_LINEAR)
    if params.noise > 0:
        x = np.clip(x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(params.noise / 255.0), 0.0, 1.0)
    small = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", small[..., ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), int(params.jpeg_quality)])
    if not ok:
        raise IdgenError(f"JPEG encoding failed for a {small.shape} image.")
    x = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0
    x = cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)
    if params.color_shift is not None:
        x = np.clip(x + np.asarray(params.color_shift, np.float32) / 255.0, 0.0, 1.0)
    if params.gray:
        x = np.repeat(_luma(x)[..., None], 3, axis=-1)
    if params.photometric:
        x = _photometric(x, params.photometric)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def grayscale(image: np.ndarray) -> np.ndarray:
    """The colorization task's input: BT.601 luminance replicated to 3 channels; uint8 RGB
    `[H, W, 3]` or `[T, H, W, 3]` in, same shape out."""
    return np.repeat(_luma(np.asarray(image))[..., None], 3, axis=-1)


def _size(size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise IdgenError(f"mask size must be (height, width), got {size!r}.") from None
    if h < 1 or w < 1:
        raise IdgenError(f"mask size must be positive, got {size!r}.")
    return h, w


def random_brush_mask(size: tuple[int, int], rng: RandomSource, *, strokes: tuple[int, int] = (1, 3),
                      vertices: tuple[int, int] = (8, 27), width: Range = (30.0, 70.0)) -> np.ndarray:
    """Free-form brush strokes, `[H, W]` float32 in {0, 1} (1 = region to fill); `size` is
    `(height, width)`.

    The free-form mask of DeepFill v2 (Yu et al., "Free-Form Image Inpainting with Gated
    Convolution", 2019) with CodeFormer's training settings (`basicsr/data/data_util.py`): each of
    `strokes` strokes is a polyline of `vertices` segments whose directions alternate around 2π/5
    (± up to 2π/12) and whose lengths are N(d/8, d/16) clipped to [0, d/4], d the image diagonal,
    drawn with round joints `width` pixels thick at 512 px (scaled with √(H·W) / 512).
    """
    import cv2

    (h, w), rng = _size(size), _generator(rng)
    scale, radius = math.sqrt(h * w) / 512.0, math.hypot(h, w) / 8.0
    mask = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(strokes[0], strokes[1] + 1))):
        count = int(rng.integers(vertices[0], vertices[1] + 1))
        low, high = 2 * math.pi / 5 - rng.uniform(0, 2 * math.pi / 12), 2 * math.pi / 5 + rng.uniform(0, 2 * math.pi / 12)
        angles = rng.uniform(low, high, count)
        angles[::2] = 2 * math.pi - angles[::2]
        lengths = np.clip(rng.normal(radius, radius / 2, count), 0, 2 * radius)
        points = [np.array([rng.integers(0, w), rng.integers(0, h)], np.float64)]
        for angle, length in zip(angles, lengths):
            step = length * np.array([math.cos(angle), math.sin(angle)])
            points.append(np.clip(points[-1] + step, 0, [w - 1, h - 1]))
        thickness = max(1, int(round(rng.uniform(*width) * scale)))
        polyline = np.round(np.stack(points)).astype(np.int32)
        cv2.polylines(mask, [polyline], False, 1, thickness)
        for x, y in polyline:
            cv2.circle(mask, (int(x), int(y)), thickness // 2, 1, -1)
    return mask.astype(np.float32)


def random_box_mask(size: tuple[int, int], rng: RandomSource, *, boxes: tuple[int, int] = (1, 3),
                    side: Range = (0.1, 0.5)) -> np.ndarray:
    """`boxes` random axis-aligned rectangles, each `side` x (image height, width) in size (drawn
    independently per axis) at a uniform position, `[H, W]` float32 in {0, 1} (1 = region to
    fill); `size` is `(height, width)`."""
    (h, w), rng = _size(size), _generator(rng)
    mask = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(boxes[0], boxes[1] + 1))):
        bh = max(1, int(round(rng.uniform(*side) * h)))
        bw = max(1, int(round(rng.uniform(*side) * w)))
        y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        mask[y: y + bh, x: x + bw] = 1.0
    return mask


def apply_mask(image: np.ndarray, mask: np.ndarray, fill: int = MASK_FILL) -> np.ndarray:
    """The inpainting task's input: a copy of `image` (`[H, W, 3]` or `[T, H, W, 3]`) with the
    region `mask > 0.5` (`mask` `[H, W]`) set to `fill` (default white, 255)."""
    image, mask = np.asarray(image), np.asarray(mask)
    if mask.shape != image.shape[-3:-1]:
        raise IdgenError(f"the mask is {mask.shape}, the image {image.shape[-3:-1]} (height, width).")
    out = image.copy()
    out[..., mask > 0.5, :] = fill
    return out


def _check_input(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-1] != 3 or 0 in array.shape:
        raise IdgenError(f"degrade takes a uint8 RGB image [H, W, 3] or clip [T, H, W, 3]; got {array.dtype} "
                         f"{tuple(array.shape)}.")
    return array


def degrade(image_or_clip: np.ndarray, preset: Union[str, DegradationPreset] = "gfpgan", *,
            seed: Optional[int] = None, rng: Optional[np.random.Generator] = None,
            tasks: Sequence[str] = ("bfr",), frame_jitter: float = 0.0, mask_kind: Optional[str] = None) -> Degraded:
    """Degrade an image `[H, W, 3]` or a clip `[T, H, W, 3]` (uint8 RGB) for restoration training
    or evaluation.

    Args:
        preset: a name in `PRESETS` or a `DegradationPreset` (used by the "bfr" task).
        seed / rng: the randomness, exactly one of them; the same seed gives bit-identical output.
        tasks: a non-empty combination of "bfr" (blind degradation), "colorize" (luminance input)
            and "inpaint" (region painted white, `MASK_FILL`), applied in that order.
        frame_jitter: clips only: per-frame variation of the shared blind draw (`jitter_params`);
            0 = every frame uses the same parameters.
        mask_kind: "brush", "box", or None for a fair coin between them.

    Returns:
        `Degraded(image, params, mask)`; `image` has the input's shape and dtype.
    """
    array = _check_input(image_or_clip)
    tasks = tuple(tasks)
    if not tasks or any(t not in TASKS for t in tasks) or len(set(tasks)) != len(tasks):
        raise IdgenError(f"tasks must be a non-empty combination of {TASKS} without repeats; got {list(tasks)}.")
    if (seed is None) == (rng is None):
        raise IdgenError("give exactly one of `seed` and `rng`.")
    if mask_kind not in (None, *MASK_KINDS):
        raise IdgenError(f"mask_kind must be one of {MASK_KINDS} or None, got {mask_kind!r}.")
    if frame_jitter and array.ndim == 3:
        raise IdgenError("frame_jitter applies to clips [T, H, W, 3], not to one image.")
    rng = _generator(rng if rng is not None else seed)
    clip = array if array.ndim == 4 else array[None]
    params: dict = {"tasks": list(tasks)}
    if "bfr" in tasks:
        preset_ranges = get_preset(preset)
        shared = draw_params(preset_ranges, rng)
        per_frame = [jitter_params(shared, preset_ranges, frame_jitter, rng) if frame_jitter else shared for _ in clip]
        clip = np.stack([apply_blind(frame, p, rng) for frame, p in zip(clip, per_frame)])
        params["preset"] = preset if isinstance(preset, str) else asdict(preset)
        params["bfr"] = asdict(shared)
        if frame_jitter:
            params["frames"] = [asdict(p) for p in per_frame]
    if "colorize" in tasks:
        clip = grayscale(clip)
    mask = None
    if "inpaint" in tasks:
        kind = mask_kind or MASK_KINDS[int(rng.integers(0, 2))]
        make = random_brush_mask if kind == "brush" else random_box_mask
        mask = make(clip.shape[1:3], rng)
        clip = apply_mask(clip, mask)
        params["mask"] = {"kind": kind, "coverage": float(mask.mean())}
    return Degraded(image=clip if array.ndim == 4 else clip[0], params=params, mask=mask)
