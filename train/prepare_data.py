"""`idgen prepare-data PHOTOS_DIR OUT_DIR`: detect, align and crop each face, drop unusable photos
with a reason, store the identity embedding and keypoints per image (see `records`).

Parallel: `--num-workers N` splits the photos over N processes on this machine; `--distributed`
under `accelerate launch` gives each process (GPU, node) its share. Each share is written as a
part and the parts are merged into one dataset.
"""

from __future__ import annotations

import logging
import re
import shutil
import string
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from idgen.errors import DatasetError

from .records import FORMAT, DatasetWriter, FaceRecord, open_dataset

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# `sharpness` (measured at 256 px whatever the crop size). On the shared test photos: portraits
# 177-757, small full-body faces 26-57; Gaussian-blurred copies (sigma 6 px) 3-11. 20 separates them.
DEFAULT_MIN_SHARPNESS = 20.0
SHARPNESS_SIZE = 256
CAPTION_FIELDS = {"identity", "name"}


def list_photos(root: Path) -> list[Path]:
    """Image files under `root`, recursively, sorted (the order keys and shares follow)."""
    if not Path(root).is_dir():
        raise DatasetError(f"{root} is not a folder.")
    photos = sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise DatasetError(f"{root} holds no photos ({', '.join(IMAGE_SUFFIXES)}).")
    return photos


def check_caption(template: str) -> None:
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    unknown = fields - CAPTION_FIELDS
    if unknown:
        raise DatasetError(f"caption template {template!r}: unknown placeholder(s) {sorted(unknown)}; "
                           f"known: {{identity}} (the photo's folder), {{name}} (its file name).")


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey central half of an aligned crop (the face; the
    borders may hold the black fill of a crop that leaves the photo), resized to `SHARPNESS_SIZE`
    so scores do not depend on the crop size. Higher is sharper."""
    import cv2

    crop = cv2.resize(crop, (SHARPNESS_SIZE, SHARPNESS_SIZE), interpolation=cv2.INTER_AREA)
    h, w = crop.shape[:2]
    face = crop[h // 4: 3 * h // 4, w // 4: 3 * w // 4]
    return float(cv2.Laplacian(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def _key(index: int, path: Path) -> str:
    return f"{index:07d}_" + re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem)[:40]


def analyse_photo(path: Path, root: Path, index: int, analyzer, *, size: int, caption: str, min_face_size: int,
                  min_sharpness: float) -> FaceRecord | str:
    """The record of one photo, or the reason it is left out."""
    from PIL import Image

    from idgen.errors import ImageReadError
    from idgen.face import align_face, transform_points
    from idgen.image_io import load_image

    try:
        image = load_image(path)
    except ImageReadError as e:
        return f"unreadable: {e}"
    faces = analyzer.detect(image)
    if not faces:
        return "no face"
    if len(faces) > 1:
        return f"several faces ({len(faces)})"
    face = faces[0]
    side = min(face.width, face.height)
    if side < min_face_size:
        return f"face too small ({side:.0f}px < {min_face_size}px)"
    if face.embedding is None:
        return "no identity embedding (the face backend has no recognition model)"
    aligned = align_face(image, face.kps, size, mode="ffhq")
    score = sharpness(aligned.image)
    if score < min_sharpness:
        return f"too blurry (sharpness {score:.1f} < {min_sharpness})"
    x1, y1, x2, y2 = face.bbox
    corners = transform_points(np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]), aligned.matrix)
    identity = path.parent.relative_to(root).as_posix() if path.parent != root else ""
    return FaceRecord(
        key=_key(index, path), image=Image.fromarray(aligned.image),
        caption=caption.format(identity=identity, name=path.stem), embedding=np.asarray(face.embedding, np.float32),
        embedding_model=face.embedding_model or "", kps=transform_points(face.kps, aligned.matrix).astype(np.float32),
        bbox=np.concatenate([corners.min(0), corners.max(0)]).astype(np.float32), identity=identity,
        source=path.relative_to(root).as_posix(),
    )


def prepare_dataset(photos_dir, out_dir, *, size: int = 512, caption: str = "a photo of a person",
                    backend: Optional[str] = None, min_face_size: int = 64, min_sharpness: float = DEFAULT_MIN_SHARPNESS,
                    shard_size: Optional[int] = None, overwrite: bool = False, num_shards: int = 1,
                    shard_index: int = 0, progress: bool = True) -> dict:
    """Prepare the photos `photos_dir` (share `shard_index` of `num_shards`) into `out_dir`.

    Returns the summary written to `dataset.json`.

    Raises:
        DatasetError: no photos, no usable face in any photo, bad caption template, or `out_dir`
            not empty (without `overwrite`). Nothing is left in `out_dir` then.
    """
    from tqdm.auto import tqdm

    from idgen.face import get_face_analyzer

    check_caption(caption)
    root = Path(photos_dir)
    photos = list(enumerate(list_photos(root)))[shard_index::num_shards]
    analyzer = get_face_analyzer(backend)
    with DatasetWriter(out_dir, size=size, shard_size=shard_size, overwrite=overwrite, part=f"part{shard_index}") as writer:
        for index, path in tqdm(photos, desc="prepare-data", disable=not progress):
            result = analyse_photo(path, root, index, analyzer, size=size, caption=caption,
                                   min_face_size=min_face_size, min_sharpness=min_sharpness)
            if isinstance(result, str):
                writer.reject(path.relative_to(root).as_posix(), result)
            else:
                writer.add(result)
        return writer.close()


def merge_datasets(parts: Sequence[Path], out_dir, *, overwrite: bool = False) -> dict:
    """Merge prepared parts (same layout and embedding model) into `out_dir`; removes the parts."""
    import json

    infos = [json.loads((Path(p) / "dataset.json").read_text()) for p in parts]
    layouts = {(i["layout"], i["size"], i["embedding_model"], i["embedding_dim"]) for i in infos}
    if len(layouts) != 1:
        raise DatasetError(f"cannot merge parts of different layouts/sizes/embeddings: {sorted(layouts)}.")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DatasetError(f"{out} exists and is not empty; choose another folder or pass --overwrite.")
        shutil.rmtree(out)
    tmp = out.with_name(out.name + ".merging")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rejected_by_reason: dict[str, int] = {}
    with open(tmp / "rejected.jsonl", "w") as rejects, open(tmp / "metadata.jsonl", "w") as meta:
        for part, info in zip(parts, infos):
            part = Path(part)
            rejects.write((part / "rejected.jsonl").read_text())
            for reason, n in info["rejected_by_reason"].items():
                rejected_by_reason[reason] = rejected_by_reason.get(reason, 0) + n
            if info["layout"] == "folder":
                meta.write((part / "metadata.jsonl").read_text())
            for sub in ("images", "faces", "shards"):
                if (part / sub).is_dir():
                    (tmp / sub).mkdir(exist_ok=True)
                    for f in (part / sub).iterdir():
                        f.rename(tmp / sub / f.name)
    if infos[0]["layout"] == "webdataset":
        (tmp / "metadata.jsonl").unlink()
    summary = {**infos[0], "count": sum(i["count"] for i in infos), "rejected": sum(i["rejected"] for i in infos),
               "rejected_by_reason": rejected_by_reason, "identities": None,
               "shards": sorted(s for i in infos for s in i["shards"])}
    (tmp / "dataset.json").write_text(json.dumps(summary, indent=2))
    tmp.rename(out)
    summary["identities"] = len({open_dataset(out)[i]["identity"] for i in range(summary["count"])})
    (out / "dataset.json").write_text(json.dumps(summary, indent=2))
    for part in parts:
        shutil.rmtree(part, ignore_errors=True)
    return summary


def _prepare_part(kwargs: dict) -> Optional[str]:
    """Worker: one share into its part folder; None when the share had no usable face."""
    try:
        prepare_dataset(**kwargs)
    except DatasetError as e:
        if "no usable face" in str(e):
            return None
        raise
    return str(kwargs["out_dir"])


def prepare_parallel(photos_dir, out_dir, *, num_workers: int, overwrite: bool = False, **kwargs) -> dict:
    """`prepare_dataset` over `num_workers` processes of this machine, merged."""
    import multiprocessing

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DatasetError(f"{out} exists and is not empty; choose another folder or pass --overwrite.")
    list_photos(Path(photos_dir))
    check_caption(kwargs.get("caption", "a photo of a person"))
    jobs = [{**kwargs, "photos_dir": photos_dir, "out_dir": out.with_name(f"{out.name}.part{i}"), "num_shards": num_workers,
             "shard_index": i, "progress": False, "overwrite": True} for i in range(num_workers)]
    with ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = [Path(p) for p in pool.map(_prepare_part, jobs) if p is not None]
    if not parts:
        raise DatasetError(f"no usable face photo in {photos_dir}, nothing written to {out}.")
    return merge_datasets(parts, out, overwrite=overwrite)


def prepare_distributed(photos_dir, out_dir, *, overwrite: bool = False, **kwargs) -> Optional[dict]:
    """Under `accelerate launch`: each process prepares its share; the main process merges."""
    from accelerate import PartialState

    state = PartialState()
    out = Path(out_dir)
    part = out.with_name(f"{out.name}.part{state.process_index}")
    _prepare_part({**kwargs, "photos_dir": photos_dir, "out_dir": part, "num_shards": state.num_processes,
                   "shard_index": state.process_index, "overwrite": True})
    state.wait_for_everyone()
    summary = None
    if state.is_main_process:
        parts = [p for i in range(state.num_processes) if (p := out.with_name(f"{out.name}.part{i}")).is_dir()]
        if not parts:
            raise DatasetError(f"no usable face photo in {photos_dir}, nothing written to {out}.")
        summary = merge_datasets(parts, out, overwrite=overwrite)
    state.wait_for_everyone()
    return summary


def _cmd(args) -> int:
    kwargs = dict(size=args.size, caption=args.caption, backend=args.backend, min_face_size=args.min_face_size,
                  min_sharpness=args.min_sharpness, shard_size=args.shard_size)
    if args.distributed:
        summary = prepare_distributed(args.photos_dir, args.out_dir, overwrite=args.overwrite, **kwargs)
    elif args.num_workers > 1:
        summary = prepare_parallel(args.photos_dir, args.out_dir, num_workers=args.num_workers, overwrite=args.overwrite, **kwargs)
    else:
        summary = prepare_dataset(args.photos_dir, args.out_dir, overwrite=args.overwrite, **kwargs)
    if summary is not None:
        reasons = ", ".join(f"{n} {r}" for r, n in summary["rejected_by_reason"].items()) or "none"
        print(f"kept {summary['count']} face(s), rejected {summary['rejected']} ({reasons}); "
              f"{summary['layout']} dataset in {args.out_dir} ({summary['embedding_model']}, {summary['embedding_dim']}-d)")
    return 0


def add_parser(subparsers) -> None:
    """Register `prepare-data` on idgen's CLI."""
    p = subparsers.add_parser("prepare-data", help="build a training dataset of aligned faces from a folder of photos")
    p.add_argument("photos_dir", help="folder of photos (searched recursively; sub-folder = identity)")
    p.add_argument("out_dir", help="output dataset folder (must be empty or absent)")
    p.add_argument("--size", type=int, default=512, choices=[256, 512, 1024], help="aligned crop side in pixels (default 512)")
    p.add_argument("--caption", default="a photo of a person",
                   help="caption template; {identity} is the photo's sub-folder, {name} its file name")
    p.add_argument("--backend", choices=["dlib", "insightface"], default=None,
                   help="face backend (insightface gives the 512-d ArcFace embeddings adapters need; dlib 128-d)")
    p.add_argument("--min-face-size", type=int, default=64, help="reject faces whose shorter box side is below this (pixels, default 64)")
    p.add_argument("--min-sharpness", type=float, default=DEFAULT_MIN_SHARPNESS,
                   help=f"reject crops whose Laplacian variance is below this (default {DEFAULT_MIN_SHARPNESS})")
    p.add_argument("--shard-size", type=int, default=None, help="write WebDataset tar shards of this many records")
    p.add_argument("--num-workers", type=int, default=1, help="processes on this machine (default 1)")
    p.add_argument("--distributed", action="store_true", help="share the work over `accelerate launch` processes")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    p.set_defaults(func=_cmd)


__all__ = ["FORMAT", "add_parser", "merge_datasets", "prepare_dataset", "prepare_parallel", "prepare_distributed"]
