"""`idgen prepare-data INPUT OUT_DIR`: detect, align and crop each face, drop unusable photos
with a reason, store the identity embedding and keypoints per image (format: `records`). The
command's parser is in `idgen.train.cli`, its defaults in `idgen.train.options`.

INPUT is a folder of photos (a photo's sub-folder is its identity) or an idgen dataset (a folder
with `dataset.json`, such as the output of `idgen synth`, or a `.tar` shard), whose records are
analysed again like photos (`input_items`): to re-embed synthetic images with another face
backend, filter them, or crop them to another size.

Parallel: `--num-workers N` splits the input's images over N processes on this machine;
`--distributed` under `accelerate launch` gives each process (GPU, node) its share. Each share is
written as a part (`OUT_DIR.part{i}`) and the parts are merged into one dataset by `merge_datasets`.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import shutil
import string
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

import cv2
from PIL import Image
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from idgen.errors import DatasetError, ImageReadError
from idgen.face import align_face, get_face_analyzer, transform_points
from idgen.image_io import list_photos, load_image
from idgen.train.options import DEFAULT_CAPTION, DEFAULT_MIN_SHARPNESS
from idgen.train.records import (
    DatasetWriter, FaceRecord, check_out_dir, dataset_info, open_dataset, partial_dir, publish,
)

logger = logging.getLogger(__name__)

CAPTION_FIELDS = {"identity", "name"}
SHARPNESS_SIZE = 256
#: Files at the top of an idgen dataset, finished or not (`records`, `idgen synth`).
DATASET_FILES = ("dataset.json", "metadata.jsonl", "synth.json")

PathLike = Union[str, os.PathLike]


def check_caption(template: str) -> None:
    """Raise DatasetError unless `template` is a `str.format` template using only `{identity}`
    and `{name}`."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise DatasetError(f"caption template {template!r} is malformed ({e}); use {{{{ }}}} for literal braces.") from None
    unknown = fields - CAPTION_FIELDS
    if unknown:
        raise DatasetError(f"caption template {template!r}: unknown placeholder(s) {sorted(unknown)}; "
                           "known: {identity} (the photo's folder, or the record's identity), "
                           "{name} (its file name without suffix, or the record's key).")


def sharpness(crop: np.ndarray) -> float:
    """Blur score of an aligned crop `[S, S, 3]` uint8 RGB: the variance of the Laplacian of the
    grey crop, resized to `SHARPNESS_SIZE` px (so the score does not depend on the crop size) and
    cut to its central half (the face; the borders may hold the black fill of a crop that runs
    past the photo). Higher is sharper; see `DEFAULT_MIN_SHARPNESS`."""

    crop = cv2.resize(crop, (SHARPNESS_SIZE, SHARPNESS_SIZE), interpolation=cv2.INTER_AREA)
    h, w = crop.shape[:2]
    face = crop[h // 4: 3 * h // 4, w // 4: 3 * w // 4]
    return float(cv2.Laplacian(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def photo_key(index: int, name: str) -> str:
    """Record key of the `index`-th input item named `name`: unique across parts of one run."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name)[:40].strip("-")
    return f"{index:07d}_{slug or 'photo'}"


@dataclass(frozen=True)
class InputItem:
    """One image to prepare (`input_items`).

    Attributes:
        index: its place in the input's order; keys and shares follow it.
        source: the photo's path relative to the input folder, or the record's key.
        identity: the photo's sub-folder ("" at the top), or the record's identity label.
        name: the caption's `{name}`: the photo's file name without suffix, or the record's key.
        load: reads the RGB image `[H, W, 3]` uint8 (ImageReadError for an unreadable photo).
    """

    index: int
    source: str
    identity: str
    name: str
    load: Callable[[], np.ndarray]


def _record_image(dataset, i: int) -> np.ndarray:
    return np.array(dataset[i]["image"])


def input_items(path: PathLike) -> list[InputItem]:
    """The images under `path`: the photos of a folder (`list_photos`), or the records of an idgen
    dataset (a folder with `DATASET_FILES` or `shards/*.tar`, e.g. `idgen synth`'s output; or a
    `.tar` shard), in order.

    Raises:
        DatasetError: no photos, or a dataset that is incomplete (no `dataset.json`) or malformed.
    """

    root = Path(path)
    dataset_like = any((root / f).is_file() for f in DATASET_FILES) or any(root.glob("shards/*.tar"))
    if root.suffix != ".tar" and not dataset_like:
        relative = [p.relative_to(root) for p in list_photos(root)]
        return [InputItem(i, rel.as_posix(), "" if rel.parent == Path() else rel.parent.as_posix(), rel.stem,
                          partial(load_image, root / rel)) for i, rel in enumerate(relative)]
    if root.is_dir() and not (root / "dataset.json").is_file():
        raise DatasetError(f"{root} is an incomplete idgen dataset (no dataset.json: the run that writes it did not "
                           "finish); complete it (`idgen synth ... --resume`) or prepare it again.")
    dataset = open_dataset(root)
    return [InputItem(i, row["key"], row.get("identity", ""), row["key"], partial(_record_image, dataset, i))
            for i, row in enumerate(map(dataset.metadata, range(len(dataset))))]


def analyse_image(image: np.ndarray, item: InputItem, analyzer, *, size: int, caption: str, min_face_size: int,
                  min_sharpness: float) -> Union[FaceRecord, str]:
    """The `FaceRecord` of the input `item` whose RGB image `[H, W, 3]` uint8 is `image`, or the
    reason (str) it is left out.

    Reasons: "no face", "several faces (N)", "face too small (Wpx < MINpx)" (the shorter box side
    in `image`), "no identity embedding …", "too blurry (sharpness S < T)".
    """

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
        return f"too blurry (sharpness {score:.1f} < {min_sharpness:g})"
    x1, y1, x2, y2 = face.bbox
    corners = transform_points(np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32), aligned.matrix)
    return FaceRecord(
        key=photo_key(item.index, item.name), image=Image.fromarray(aligned.image),
        caption=caption.format(identity=item.identity, name=item.name),
        embedding=np.asarray(face.embedding, np.float32), embedding_model=face.embedding_model or "",
        kps=transform_points(face.kps, aligned.matrix).astype(np.float32),
        bbox=np.concatenate([corners.min(0), corners.max(0)]).astype(np.float32), identity=item.identity,
        source=item.source,
    )


def prepare_dataset(input_path: PathLike, out_dir: PathLike, *, size: int = 512, caption: str = DEFAULT_CAPTION,
                    backend: Optional[str] = None, min_face_size: int = 64,
                    min_sharpness: float = DEFAULT_MIN_SHARPNESS, shard_size: Optional[int] = None,
                    overwrite: bool = False, num_shards: int = 1, shard_index: int = 0, progress: bool = True,
                    allow_empty: bool = False) -> dict:
    """Prepare the photos under `input_path`, or the records of the idgen dataset `input_path`
    (`input_items`), into the dataset `out_dir` (see `records`).

    Args:
        size: side of the aligned FFHQ-style crops in pixels.
        caption: `str.format` template with `{identity}` (the photo's folder relative to
            `input_path`, "" at the top; a record's identity) and `{name}` (the file name without
            suffix; a record's key).
        backend: face backend, "dlib" (128-d) or "insightface" (512-d); None: idgen's default.
        min_face_size: minimum shorter side of the face box in the source photo, pixels.
        min_sharpness: minimum `sharpness` of the crop.
        shard_size: None for the folder layout, N for WebDataset shards of N records.
        overwrite: replace a non-empty `out_dir`.
        num_shards, shard_index: process only the items `[shard_index::num_shards]` of
            `input_items` (one part of a parallel run; keys stay unique across parts).
        progress: show a tqdm bar.
        allow_empty: write a dataset without records instead of raising (parts).

    Returns:
        The summary written to `dataset.json`.

    Raises:
        DatasetError: no photos, an incomplete or malformed input dataset, no usable face in any
            image, bad caption template, bad share, or `out_dir` not empty (without `overwrite`).
            Nothing is written to `out_dir` then.
    """

    check_caption(caption)
    if not 0 <= shard_index < num_shards:
        raise DatasetError(f"shard_index must be in [0, {num_shards}), got {shard_index}.")
    if min_face_size < 1:
        raise DatasetError(f"min_face_size must be at least 1 pixel, got {min_face_size}.")
    items = input_items(input_path)[shard_index::num_shards]
    analyzer = get_face_analyzer(backend)
    with DatasetWriter(out_dir, size=size, shard_size=shard_size, overwrite=overwrite,
                       shard_prefix=f"part{shard_index}-" if num_shards > 1 else "", allow_empty=allow_empty) as writer:
        for item in tqdm(items, desc="prepare-data", unit="photo", disable=not progress):
            try:
                image = item.load()
            except ImageReadError as e:
                result = f"unreadable: {e}"
            else:
                result = analyse_image(image, item, analyzer, size=size, caption=caption,
                                       min_face_size=min_face_size, min_sharpness=min_sharpness)
            if isinstance(result, str):
                logger.debug("%s: %s", item.source, result)
                writer.reject(item.source, result)
            else:
                writer.add(result)
        return writer.close()


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link `src` at `dst` (the part stays intact until the merge is complete), or copy it
    across file systems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def merge_datasets(parts: Sequence[PathLike], out_dir: PathLike, *, overwrite: bool = False) -> dict:
    """Merge dataset folders written by `prepare_dataset` (same layout, size and embedding model;
    parts without records allowed) into `out_dir`, and remove the parts.

    Folder parts: their images, face tensors and `metadata.jsonl` lines are combined; WebDataset
    parts: their shards become `shards/{n:06d}.tar` in part order. `rejected.jsonl` is combined
    and the counts are summed. Written atomically like `DatasetWriter`.

    Returns:
        The merged `dataset.json` contents.

    Raises:
        DatasetError: a part is not a dataset folder, the parts differ, a key occurs twice, no
            part has a record (the rejection counts are listed), or `out_dir` is not empty
            (without `overwrite`). The parts are left as they were then.
    """

    parts = [Path(p) for p in parts]
    if not parts:
        raise DatasetError("merge_datasets: no parts given.")
    for part in parts:
        if not part.is_dir():
            raise DatasetError(f"{part}: a part to merge must be a dataset folder written by prepare_dataset.")
    check_out_dir(out_dir, overwrite)
    datasets = [open_dataset(p) for p in parts]
    infos = [d.info for d in datasets]
    shapes = {(i["layout"], i["size"]) for i in infos}
    embeddings = {(i["embedding_model"], i["embedding_dim"]) for i in infos if i["count"]}
    if len(shapes) > 1 or len(embeddings) > 1:
        raise DatasetError(f"cannot merge parts of different layouts/sizes {sorted(shapes)} "
                           f"or embeddings {sorted(map(str, embeddings))}.")
    rejected = sum((Counter(i["rejected_by_reason"]) for i in infos), Counter())
    if not embeddings:
        reasons = ", ".join(f"{n} {r}" for r, n in rejected.items()) or "no photos"
        raise DatasetError(f"no usable face photo, nothing written to {out_dir} (rejected: {reasons}).")
    rows = [[d.metadata(j) for j in range(len(d))] for d in datasets]
    twice = [k for k, n in Counter(row["key"] for part_rows in rows for row in part_rows).items() if n > 1]
    if twice:
        raise DatasetError(f"cannot merge: record key(s) {twice[:5]} occur in several parts.")
    (layout, size), (model, dim) = shapes.pop(), embeddings.pop()
    tmp, shards = partial_dir(out_dir), []
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        with open(tmp / "rejected.jsonl", "w") as rejects:
            for part in parts:
                if (part / "rejected.jsonl").is_file():
                    rejects.write((part / "rejected.jsonl").read_text())
        if layout == "folder":  # in key order: a run merged from parts lists its records as a single process does
            with open(tmp / "metadata.jsonl", "w") as meta:
                for row, part in sorted(((r, p) for p, part_rows in zip(parts, rows) for r in part_rows),
                                        key=lambda pair: pair[0]["key"]):
                    _link_or_copy(part / row["file_name"], tmp / row["file_name"])
                    _link_or_copy(part / row["face"], tmp / row["face"])
                    meta.write(json.dumps(row) + "\n")
        else:
            for part, info in zip(parts, infos):
                for shard in info["shards"]:
                    shards.append(f"shards/{len(shards):06d}.tar")
                    _link_or_copy(part / shard, tmp / shards[-1])
        summary = dataset_info(layout=layout, size=size, count=sum(map(len, rows)), rejected_by_reason=rejected,
                               identities=len({row.get("identity", "") for part_rows in rows for row in part_rows}),
                               embedding_model=model, embedding_dim=dim, shards=shards)
        (tmp / "dataset.json").write_text(json.dumps(summary, indent=2))
        publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for part in parts:
        shutil.rmtree(part, ignore_errors=True)
    return summary


def _part_dirs(out_dir: PathLike, n: int) -> list[Path]:
    out = Path(out_dir)
    return [out.with_name(f"{out.name}.part{i}") for i in range(n)]


def _prepare_part(kwargs: dict) -> dict:
    """Worker entry point (module level, so the spawn context can pickle it)."""
    return prepare_dataset(**kwargs)


def prepare_parallel(input_path: PathLike, out_dir: PathLike, *, num_workers: int, caption: str = DEFAULT_CAPTION,
                     overwrite: bool = False, progress: bool = True, **kwargs) -> dict:
    """`prepare_dataset` over `num_workers` processes of this machine ("spawn" context), one part
    each, merged into `out_dir`. `kwargs` are `prepare_dataset`'s options; `progress` shows the
    first worker's bar. Parts are removed whatever happens."""

    check_out_dir(out_dir, overwrite)
    check_caption(caption)
    num_workers = max(1, min(num_workers, len(input_items(input_path))))
    parts = _part_dirs(out_dir, num_workers)
    jobs = [{**kwargs, "input_path": input_path, "out_dir": part, "caption": caption, "num_shards": num_workers,
             "shard_index": i, "progress": progress and i == 0, "overwrite": True, "allow_empty": True}
            for i, part in enumerate(parts)]
    try:
        with ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_prepare_part, jobs))
        return merge_datasets(parts, out_dir, overwrite=overwrite)
    finally:
        for part in parts:
            shutil.rmtree(part, ignore_errors=True)


def on_every_process(state, fn, what: str = "prepare-data"):
    """Run `fn()` here; if it raised on any process, raise on every process. Each process must
    reach this collective, or the others would wait for it forever."""

    failure, result = None, None
    try:
        result = fn()
    except Exception as e:  # re-raised below, after the collective
        failure = e
    errors = [m for m in gather_object([None if failure is None else f"process {state.process_index}: {failure}"]) if m]
    if failure is not None:
        raise failure
    if errors:
        raise DatasetError(f"{what} failed in another process: " + "; ".join(errors))
    return result


def prepare_distributed(input_path: PathLike, out_dir: PathLike, *, overwrite: bool = False, progress: bool = True,
                        **kwargs) -> Optional[dict]:
    """Under `accelerate launch`: process `i` of N prepares the input items `[i::N]` into
    `OUT_DIR.part{i}` (beside `out_dir`, so on storage every process sees); after all are done,
    the main process merges. Returns the summary on the main process, None on the others. A
    failure on one process is raised on all of them."""

    # cpu=True: the processes only exchange a few small objects (gloo, under any launcher); without
    # it, on a machine without CUDA every process would think it is the only one.
    state = PartialState(cpu=True)
    check_out_dir(out_dir, overwrite)
    parts = _part_dirs(out_dir, state.num_processes)
    try:
        on_every_process(state, lambda: prepare_dataset(
            input_path, parts[state.process_index], num_shards=state.num_processes, shard_index=state.process_index,
            overwrite=True, allow_empty=True, progress=progress and state.is_main_process, **kwargs))
        return on_every_process(
            state, lambda: merge_datasets(parts, out_dir, overwrite=overwrite) if state.is_main_process else None)
    finally:
        if state.is_main_process:
            for part in parts:
                shutil.rmtree(part, ignore_errors=True)


__all__ = ["DEFAULT_MIN_SHARPNESS", "InputItem", "analyse_image", "check_caption", "input_items", "list_photos",
           "merge_datasets", "prepare_dataset", "prepare_distributed", "prepare_parallel", "sharpness"]
