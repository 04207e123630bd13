"""Robustness, invisibility and speed of idgen's invisible watermark (and of invisible-watermark's
methods, for comparison) on real photos and a few synthetic images.

    python bench/bench_watermark.py                                   # idgen's watermark
    python bench/bench_watermark.py --with-imwatermark                # + dwtDct, dwtDctSvd, rivaGan
    python bench/bench_watermark.py --methods rivaGan --fp-samples 0 --frames 2   # rivaGan: ~10 s an image on CPU
    python bench/bench_watermark.py --faces DIR [DIR ...] --json out.json

invisible-watermark is not an idgen dependency: run the second form from a throw-away venv that
has it (`pip install torch invisible-watermark onnxruntime av opencv-python pillow`); this script
puts the repository on sys.path, so idgen itself need not be installed there.

Per method and attack: bit accuracy over the payload (mean and min over images), detection rate
(idgen: the magic check of `detect`; others: >= 29 of their 32 bits), PSNR of the marked image
(dB, mean and min) and embed/detect time (ms, mean). Attacks the watermark is built for: JPEG 75,
0.5x resize, both chained in either order, H.264 crf 18 (a short panning clip of each photo;
photos under 320 px are reported on their own row).
Attacks it is not built for are measured too (crop, rotation, brightness, contrast, JPEG 50,
0.25x). False positives: detections on unmarked images (the photos, the synthetic images, and
random crops and rescales of the photos). Images a method refuses to mark (invisible-watermark:
under 256x256) are listed and left out of its numbers; an attacked image it then refuses to read
counts as a miss.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from idgen.provenance import watermark as idgen_watermark  # noqa: E402

DEFAULT_FACES = [REPO.parent / "shared" / "faces", REPO / "assets" / "faces"]
PAYLOAD_ID = "5eed1d9e"
IMWATERMARK_BITS = 32
SMALL_VIDEO = 320  # the video attack is reported apart for photos whose short side is under this (px)
METHODS = ("idgen", "dwtDct", "dwtDctSvd", "rivaGan")
DETECT_MIN_BITS = 29  # of 32, for the methods without a magic check (p = 1.3e-6 by chance)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def resize(image: np.ndarray, scale: float) -> np.ndarray:
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def crop(image: np.ndarray, fraction: float) -> np.ndarray:
    height, width = image.shape[:2]
    dy, dx = round(height * fraction / 2), round(width * fraction / 2)
    return image[dy:height - dy, dx:width - dx]


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def levels(image: np.ndarray, gain: float, offset: float) -> np.ndarray:
    return np.clip(image.astype(np.float32) * gain + offset, 0, 255).round().astype(np.uint8)


ATTACKS = {
    "none": lambda x: x,
    "jpeg75": lambda x: jpeg(x, 75),
    "resize0.5": lambda x: resize(x, 0.5),
    "jpeg75+resize0.5": lambda x: resize(jpeg(x, 75), 0.5),
    "resize0.5+jpeg75": lambda x: jpeg(resize(x, 0.5), 75),
}
OUT_OF_SCOPE = {
    "jpeg50": lambda x: jpeg(x, 50),
    "resize0.25": lambda x: resize(x, 0.25),
    "resize1.5": lambda x: resize(x, 1.5),
    "crop2%": lambda x: crop(x, 0.02),
    "crop10%": lambda x: crop(x, 0.10),
    "rotate1deg": lambda x: rotate(x, 1.0),
    "brightness+8": lambda x: levels(x, 1.0, 8),
    "contrast0.9": lambda x: levels(x, 0.9, 12.8),
}


class IdgenMethod:
    name, bits, min_pixels = "idgen", idgen_watermark.PAYLOAD_BITS, 1

    def __init__(self):
        self.expected = idgen_watermark.payload_bits(PAYLOAD_ID)

    def embed(self, image):
        return idgen_watermark.embed(image, PAYLOAD_ID)

    def embed_frame(self, frame):
        return idgen_watermark.watermark_frame(frame, PAYLOAD_ID)

    def read(self, image):
        """(bit accuracy over the 64 payload bits, detected)."""
        result = idgen_watermark.detect(image)
        return float(np.mean(np.array(result.bits) == self.expected)), result.magic_ok


class ImWatermarkMethod:
    """invisible-watermark's `WatermarkEncoder`/`WatermarkDecoder`, 32 bits, BGR images."""

    bits, min_pixels = IMWATERMARK_BITS, 256 * 256

    def __init__(self, name):
        from imwatermark import WatermarkDecoder, WatermarkEncoder

        self.name = name
        self.expected = np.array([int(b) for b in f"{int(PAYLOAD_ID, 16):032b}"])
        self.encoder = WatermarkEncoder()
        self.encoder.set_watermark("bits", self.expected.tolist())
        self.decoder = WatermarkDecoder("bits", IMWATERMARK_BITS)
        if name == "rivaGan":
            WatermarkEncoder.loadModel()

    def embed(self, image):
        if image.shape[0] * image.shape[1] < self.min_pixels:
            return None
        bgr = self.encoder.encode(np.ascontiguousarray(image[:, :, ::-1]), self.name)
        return np.ascontiguousarray(bgr[:, :, ::-1])

    embed_frame = embed

    def read(self, image):
        if image.shape[0] * image.shape[1] < self.min_pixels:
            return 0.0, False
        bits = np.array(self.decoder.decode(np.ascontiguousarray(image[:, :, ::-1]), self.name), dtype=int)
        matches = int(np.sum(bits == self.expected))
        return matches / IMWATERMARK_BITS, matches >= DETECT_MIN_BITS


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def load_photos(folders) -> dict[str, np.ndarray]:
    photos, seen = {}, set()
    for folder in folders:
        for path in sorted(Path(folder).glob("*")):
            if path.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp"):
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                photos[path.name] = np.asarray(Image.open(path).convert("RGB"))
    return photos


def synthetic_images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32)
    gradient = np.stack([xx / 2, yy / 2, (xx + yy) / 4], -1)
    smooth = cv2.GaussianBlur(rng.random((512, 512, 3)).astype(np.float32), (0, 0), 24)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min()) * 200 + 28
    return {
        "synthetic_gradient512": gradient.clip(0, 255).astype(np.uint8),
        "synthetic_smooth512": smooth.astype(np.uint8),
        "synthetic_flat512": np.full((512, 512, 3), 128, np.uint8),
        "synthetic_white512": np.full((512, 512, 3), 255, np.uint8),
        "synthetic_noise512": rng.integers(0, 256, (512, 512, 3), dtype=np.uint8),
        "synthetic_smooth64": cv2.resize(smooth, (64, 64), interpolation=cv2.INTER_AREA).astype(np.uint8),
    }


def video_attack(method, image: np.ndarray, crf: int, frames: int) -> list[tuple[float, bool]]:
    """A panning clip of `image` (2 px a frame), each frame marked, encoded as H.264 at `crf`:
    the per-frame (bit accuracy, detected) after decoding."""
    from idgen.media.video import read_video, write_video

    height, width = (v - v % 2 for v in image.shape[:2])
    clip = [method.embed_frame(np.ascontiguousarray(np.roll(image, 2 * i, axis=1)[:height, :width]))
            for i in range(frames)]
    if clip[0] is None:
        return []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp4"
        write_video(path, clip, 24, crf=crf)
        decoded, _ = read_video(path)
    return [method.read(frame) for frame in decoded]


def false_positives(method, images: dict[str, np.ndarray], samples: int) -> tuple[int, int]:
    """(detections, images tried) on unmarked images: each image, plus `samples` random crops
    (30-100 % per side) rescaled by 0.5-1.5, each also JPEG-75 compressed."""
    rng = np.random.default_rng(1)
    tried = detections = 0
    pool = list(images.values())
    candidates = list(pool)
    for _ in range(samples):
        image = pool[rng.integers(len(pool))]
        height, width = image.shape[:2]
        h, w = (max(16, int(v * rng.uniform(0.3, 1.0))) for v in (height, width))
        y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        candidates.append(resize(np.ascontiguousarray(image[y:y + h, x:x + w]), rng.uniform(0.5, 1.5)))
    for image in candidates + [jpeg(c, 75) for c in candidates]:
        if image.shape[0] * image.shape[1] < method.min_pixels:
            continue
        tried += 1
        detections += method.read(image)[1]
    return detections, tried


def summarize(values: list[tuple[float, bool]]) -> Optional[dict]:
    if not values:
        return None
    accuracies = [a for a, _ in values]
    return {"bit_accuracy_mean": round(float(np.mean(accuracies)), 4), "bit_accuracy_min": round(float(np.min(accuracies)), 4),
            "detection_rate": round(float(np.mean([d for _, d in values])), 4), "n": len(values)}


def bench_method(method, images: dict[str, np.ndarray], photos: dict[str, np.ndarray], fp_samples: int,
                 crf: int, frames: int) -> dict:
    marked, psnrs, embed_ms, detect_ms = {}, [], [], []
    for name, image in images.items():
        start = time.perf_counter()
        out = method.embed(image)
        embed_ms.append((time.perf_counter() - start) * 1000)
        if out is None:
            continue
        marked[name] = out
        if name in photos:
            psnrs.append(psnr(image, out))
        start = time.perf_counter()
        method.read(out)
        detect_ms.append((time.perf_counter() - start) * 1000)
    refused = [name for name in images if name not in marked]
    rows = {}
    for attack, fn in {**ATTACKS, **OUT_OF_SCOPE}.items():
        values = {name: method.read(fn(out)) for name, out in marked.items()}
        rows[attack] = {"photos": summarize([v for k, v in values.items() if k in photos]),
                        "synthetic": summarize([v for k, v in values.items() if k not in photos])}
    clips = {name: video_attack(method, image, crf, frames) for name, image in photos.items()}
    for label, small in ((f"h264crf{crf}", False), (f"h264crf{crf}<{SMALL_VIDEO}px", True)):
        values = [v for name, clip in clips.items() if (min(photos[name].shape[:2]) < SMALL_VIDEO) == small for v in clip]
        rows[label] = {"photos": summarize(values)}
    detections, tried = false_positives(method, {**photos, **{k: v for k, v in images.items() if k not in photos}},
                                        fp_samples)
    return {"method": method.name, "bits": method.bits, "images": len(images), "refused": refused,
            "photos": sorted(photos),
            "psnr_photos_mean": round(float(np.mean(psnrs)), 2) if psnrs else None,
            "psnr_photos_min": round(float(np.min(psnrs)), 2) if psnrs else None,
            "embed_ms_mean": round(float(np.mean(embed_ms)), 1), "detect_ms_mean": round(float(np.mean(detect_ms)), 1),
            "false_positives": detections, "clean_images_tried": tried, "attacks": rows}


def _cells(row) -> str:
    if row is None:
        return "-"
    return (f"bits {row['bit_accuracy_mean']:6.1%} mean {row['bit_accuracy_min']:6.1%} min, "
            f"detected {row['detection_rate']:6.1%}")


def print_result(result: dict) -> None:
    print(f"\n== {result['method']} ({result['bits']} bits): {len(result['photos'])} photos + "
          f"{result['images'] - len(result['photos'])} synthetic images (refused: {', '.join(result['refused']) or 'none'})\n"
          f"   PSNR on photos {result['psnr_photos_mean']} dB mean / {result['psnr_photos_min']} min; "
          f"embed {result['embed_ms_mean']} ms, detect {result['detect_ms_mean']} ms (mean per image); "
          f"false positives {result['false_positives']} of {result['clean_images_tried']} clean images")
    print(f"  {'attack':18s} {'photos':52s} synthetic")
    for attack, row in result["attacks"].items():
        scope = "  (not designed for)" if attack in OUT_OF_SCOPE else ""
        print(f"  {attack:18s} {_cells(row['photos'])} | {_cells(row.get('synthetic'))}{scope}")
    print("  (video rows: every decoded frame of every photo's clip)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", nargs="+", type=Path, default=[d for d in DEFAULT_FACES if d.is_dir()],
                        help="folders of real photos (default: ../shared/faces and assets/faces)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=["idgen"])
    parser.add_argument("--with-imwatermark", action="store_true", help="bench all of --methods' choices")
    parser.add_argument("--fp-samples", type=int, default=200, help="random crops/rescales for the false-positive count")
    parser.add_argument("--crf", type=int, default=18, help="x264 crf of the video attack")
    parser.add_argument("--frames", type=int, default=8, help="frames of each photo's clip in the video attack")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args(argv)
    photos = load_photos(args.faces)
    if not photos:
        parser.error(f"no photos in {', '.join(map(str, args.faces))}")
    images = {**photos, **synthetic_images()}
    names = METHODS if args.with_imwatermark else args.methods
    methods = [IdgenMethod() if name == "idgen" else ImWatermarkMethod(name) for name in names]
    results = []
    for method in methods:
        results.append(bench_method(method, images, photos, args.fp_samples, args.crf, args.frames))
        print_result(results[-1])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
