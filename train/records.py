"""The prepared face dataset on disk: one aligned crop, caption, identity embedding and keypoints
per record, as a folder (Hugging Face imagefolder convention) or as WebDataset tar shards.

Folder layout:
    dataset.json                  format, version, layout, size, counts, embedding model/dim, shard
                                  list (written last: it marks the dataset complete)
    metadata.jsonl                one JSON object per record (`FaceRecord.metadata`): file_name,
                                  text, face, key, identity, source, embedding_model, embedding_dim
    images/{key}.png              the aligned size x size RGB crop
    faces/{key}.safetensors       embedding [D] f32, kps [5, 2] f32, bbox [4] f32 (crop pixels)
    rejected.jsonl                photos left out: {"source", "reason"}
WebDataset layout: the same dataset.json / rejected.jsonl, and `shards/{prefix}{index:06d}.tar`
whose members are `{key}.png`, `{key}.json` (the metadata object) and `{key}.safetensors`.

Writing is atomic: `DatasetWriter` fills `OUT_DIR.partial-<pid>` and renames it to `OUT_DIR` in
`close()`. Reading: `open_dataset(path)` → `FaceDataset` (map-style torch dataset).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from safetensors.numpy import load, save

from idgen.errors import DatasetError

FORMAT, VERSION = "idgen-faces", 1
#: Record keys name files and tar members: letters, digits, "_" and "-" only (no dots).
KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
#: The members of one record in a tar shard.
RECORD_SUFFIXES = ("png", "json", "safetensors")
#: Shapes of the per-record tensors; "embedding" is `[D]` with D fixed per dataset.
TENSOR_SHAPES = {"kps": (5, 2), "bbox": (4,)}

PathLike = Union[str, os.PathLike]


@dataclass
class FaceRecord:
    """One training example.

    Attributes:
        key: unique, filesystem-safe name (`KEY_PATTERN`), e.g. "0000123_photo-name".
        image: the aligned `size` x `size` RGB crop.
        caption: the text paired with the image.
        embedding: `[D]` float32, the face analyzer's raw identity embedding (dlib 128,
            insightface 512).
        embedding_model: name of the model that produced `embedding`.
        kps: `[5, 2]` float32 ArcFace-order keypoints, in crop pixels.
        bbox: `[4]` float32 `(x1, y1, x2, y2)` face box, in crop pixels.
        identity: identity label (the photo's folder relative to the input root; "" at the top).
        source: the original photo's path relative to the input root.
    """

    key: str
    image: Image.Image
    caption: str
    embedding: np.ndarray
    embedding_model: str
    kps: np.ndarray
    bbox: np.ndarray
    identity: str = ""
    source: str = ""

    def metadata(self) -> dict:
        """The record's `metadata.jsonl` line / tar `.json` member (paths relative to the dataset)."""
        return {"file_name": f"images/{self.key}.png", "text": self.caption, "face": f"faces/{self.key}.safetensors",
                "key": self.key, "identity": self.identity, "source": self.source,
                "embedding_model": self.embedding_model, "embedding_dim": int(np.asarray(self.embedding).size)}

    def tensors(self) -> dict[str, np.ndarray]:
        """`embedding` `[D]`, `kps` `[5, 2]`, `bbox` `[4]`, float32. Raises DatasetError on other shapes."""
        tensors = {"embedding": np.asarray(self.embedding, np.float32), "kps": np.asarray(self.kps, np.float32),
                   "bbox": np.asarray(self.bbox, np.float32)}
        _check_tensors(tensors, f"record {self.key!r}")
        return tensors


# ------------------------------------------------------------------------------ shared helpers
def reason_category(reason: str) -> str:
    """The category a rejection reason is counted under: its text before " (" or ":"
    ("too blurry (sharpness 3.1 < 20)" → "too blurry")."""
    return reason.split(" (")[0].split(":")[0]


def check_out_dir(out_dir: PathLike, overwrite: bool) -> None:
    """Raise DatasetError unless `out_dir` is absent, an empty folder, or `overwrite` is set."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} exists and is not a folder.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DatasetError(f"{out} exists and is not empty; choose another folder or pass --overwrite.")


def partial_dir(out_dir: PathLike) -> Path:
    """The sibling folder a dataset is written into before `publish` renames it to `out_dir`."""
    out = Path(out_dir)
    return out.with_name(f"{out.name}.partial-{os.getpid()}")


def publish(tmp: Path, out_dir: PathLike) -> None:
    """Replace `out_dir` (if any) by the finished folder `tmp`."""
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def dataset_info(*, layout: str, size: int, count: int, rejected_by_reason: dict, identities: int,
                 embedding_model: Optional[str], embedding_dim: Optional[int], shards: Sequence[str] = ()) -> dict:
    """The `dataset.json` contents (also the summary `DatasetWriter.close` returns)."""
    return {"format": FORMAT, "version": VERSION, "layout": layout, "size": size, "count": count,
            "rejected": sum(rejected_by_reason.values()), "rejected_by_reason": dict(rejected_by_reason),
            "identities": identities, "embedding_model": embedding_model, "embedding_dim": embedding_dim,
            "shards": list(shards)}


def _check_tensors(tensors: dict, where: str, embedding_dim: Optional[int] = None) -> None:
    for name, shape in {**TENSOR_SHAPES, "embedding": None}.items():
        if name not in tensors:
            raise DatasetError(f"{where}: no '{name}' tensor.")
        got = tuple(tensors[name].shape)
        if shape is not None and got != shape:
            raise DatasetError(f"{where}: '{name}' has shape {list(got)}, expected {list(shape)}.")
    dim = tensors["embedding"].shape
    if len(dim) != 1 or dim[0] == 0 or (embedding_dim is not None and dim[0] != embedding_dim):
        want = f"[{embedding_dim}]" if embedding_dim is not None else "[D]"
        raise DatasetError(f"{where}: 'embedding' has shape {list(dim)}, expected {want}.")


# ------------------------------------------------------------------------------------- writing
def face_bytes(record: FaceRecord) -> bytes:
    """The record's `{key}.safetensors`: embedding, kps and bbox, with the embedding model named."""
    return save(record.tensors(), metadata={"embedding_model": str(record.embedding_model or "")})


def tar_record(tar: tarfile.TarFile, record: FaceRecord, meta: dict, face: bytes) -> None:
    """Add a record's shard members to `tar`: `{key}.png` (the RGB crop), `{key}.json` (`meta`) and
    `{key}.safetensors` (`face`, `face_bytes`); mtime 0, so the bytes depend on the data only."""
    png = io.BytesIO()
    record.image.convert("RGB").save(png, format="PNG")
    for suffix, data in zip(RECORD_SUFFIXES, (png.getvalue(), json.dumps(meta).encode(), face)):
        info = tarfile.TarInfo(f"{record.key}.{suffix}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


class DatasetWriter:
    """Writes a dataset atomically (a context manager).

    Records go into `OUT_DIR.partial-<pid>`; `close()` writes `dataset.json` and renames the folder
    to `OUT_DIR`. On an exception inside the `with` block the partial folder is removed and no
    `OUT_DIR` is left; leaving the block normally calls `close()`.

    Args:
        out_dir: the dataset folder to create; must be absent or empty unless `overwrite`.
        size: side of the aligned crops in pixels; every record's image must be `size` x `size`.
        shard_size: None for the folder layout; N for WebDataset tar shards of at most N records.
        overwrite: replace a non-empty `out_dir` (only once the new dataset is complete).
        shard_prefix: prefix of the shard file names (`shards/{prefix}{index:06d}.tar`).
        allow_empty: close a dataset without records instead of raising (the parts of a parallel
            run, whose rejections the merge still reports).
    """

    def __init__(self, out_dir: PathLike, *, size: int, shard_size: Optional[int] = None, overwrite: bool = False,
                 shard_prefix: str = "", allow_empty: bool = False):
        if size <= 0:
            raise DatasetError(f"crop size must be a positive number of pixels, got {size}.")
        if shard_size is not None and shard_size < 1:
            raise DatasetError(f"shard_size must be at least 1 record, got {shard_size}.")
        check_out_dir(out_dir, overwrite)
        self.out_dir, self.size, self.shard_size = Path(out_dir), size, shard_size
        self.shard_prefix, self.allow_empty = shard_prefix, allow_empty
        self.tmp = partial_dir(self.out_dir)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        if not shard_size:
            (self.tmp / "images").mkdir()
            (self.tmp / "faces").mkdir()
        else:
            (self.tmp / "shards").mkdir()
        self.count, self.rejected, self.identities = 0, Counter(), set()
        self.embedding: Optional[tuple[str, int]] = None  # (model, dim) of the first record
        self.summary: Optional[dict] = None
        self._keys: set[str] = set()
        self._meta = None if shard_size else open(self.tmp / "metadata.jsonl", "w")
        self._rejects = open(self.tmp / "rejected.jsonl", "w")
        self._tar, self._shards = None, []

    def add(self, record: FaceRecord) -> None:
        """Write one record. Raises DatasetError on a bad/duplicate key, a crop that is not
        `size` x `size`, tensor shapes, or an embedding model/dim other than the first record's."""
        if not KEY_PATTERN.fullmatch(record.key or ""):
            raise DatasetError(f"record key {record.key!r} must match {KEY_PATTERN.pattern} (it names files).")
        if record.key in self._keys:
            raise DatasetError(f"record key {record.key!r} is used twice.")
        if record.image.size != (self.size, self.size):
            raise DatasetError(f"record {record.key!r}: image is {record.image.size}, expected {(self.size, self.size)}.")
        tensors = record.tensors()
        embedding = (record.embedding_model, int(tensors["embedding"].shape[0]))
        if self.embedding is None:
            self.embedding = embedding
        elif embedding != self.embedding:
            raise DatasetError(f"record {record.key!r}: embedding {embedding} differs from the dataset's {self.embedding}.")

        meta, face = record.metadata(), face_bytes(record)
        if self.shard_size:
            if self.count % self.shard_size == 0:
                self._next_shard()
            tar_record(self._tar, record, meta, face)
        else:
            record.image.convert("RGB").save(self.tmp / meta["file_name"])
            (self.tmp / meta["face"]).write_bytes(face)
            self._meta.write(json.dumps(meta) + "\n")
        self._keys.add(record.key)
        self.count += 1
        self.identities.add(record.identity)

    def _next_shard(self) -> None:
        if self._tar is not None:
            self._tar.close()
        name = f"shards/{self.shard_prefix}{len(self._shards):06d}.tar"
        self._shards.append(name)
        self._tar = tarfile.open(self.tmp / name, "w")

    def reject(self, source: str, reason: str) -> None:
        """Record that the photo `source` was left out, and why (counted by `reason_category`)."""
        self._rejects.write(json.dumps({"source": source, "reason": reason}) + "\n")
        self.rejected[reason_category(reason)] += 1

    def close(self) -> dict:
        """Write `dataset.json`, move the dataset into place and return its contents (idempotent).

        Raises:
            DatasetError: no record was added (unless `allow_empty`); nothing is left then.
        """
        if self.summary is not None:
            return self.summary
        try:
            self._close_files()
            if self.count == 0 and not self.allow_empty:
                reasons = ", ".join(f"{n} {r}" for r, n in self.rejected.items()) or "no photos"
                raise DatasetError(f"no usable face photo, nothing written to {self.out_dir} (rejected: {reasons}).")
            model, dim = self.embedding or (None, None)
            summary = dataset_info(layout="webdataset" if self.shard_size else "folder", size=self.size,
                                   count=self.count, rejected_by_reason=self.rejected, identities=len(self.identities),
                                   embedding_model=model, embedding_dim=dim, shards=self._shards)
            (self.tmp / "dataset.json").write_text(json.dumps(summary, indent=2))
            publish(self.tmp, self.out_dir)
        except BaseException:
            self.abort()
            raise
        self.summary = summary
        return summary

    def abort(self) -> None:
        """Discard everything written so far."""
        self._close_files()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _close_files(self) -> None:
        for handle in (self._tar, self._meta, self._rejects):
            if handle is not None:
                handle.close()

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self.abort()
        else:
            self.close()
        return False


# ------------------------------------------------------------------------------------- reading
def _load_face(data: bytes, where: str, embedding_dim: Optional[int]) -> dict[str, np.ndarray]:
    try:
        tensors = load(data)
    except Exception as e:  # safetensors raises several types on foreign bytes
        raise DatasetError(f"{where}: not a safetensors face record ({type(e).__name__}: {e}).") from None
    _check_tensors(tensors, where, embedding_dim)
    return tensors


def _decode_png(data: bytes, where: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"{where}: not a readable image ({e}).") from None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the record's {what} ({e.strerror}).") from None


def _index_folder(folder: Path) -> list[tuple]:
    """`("file", folder, row)` per metadata line; checks the fields and that the files exist."""
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        raise DatasetError(f"{folder}: no metadata.jsonl (expected one JSON record per line).")
    items = []
    try:
        lines = meta.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DatasetError(f"{meta}: not UTF-8 text (byte {e.start}); prepare the dataset again.") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{meta} line {n}: not JSON ({e}).") from None
        if not isinstance(row, dict) or not all(isinstance(row.get(f), str) for f in ("file_name", "face", "text")):
            raise DatasetError(f"{meta} line {n}: expected an object with string fields file_name, face, text.")
        for field in ("file_name", "face"):
            if not (folder / row[field]).is_file():
                raise DatasetError(f"{meta} line {n}: {row[field]} does not exist in {folder}.")
        row.setdefault("key", Path(row["file_name"]).stem)
        items.append(("file", folder, row))
    return items


def _index_shard(shard: Path) -> list[tuple]:
    """`("tar", shard, (key, {suffix: (offset, size)}))` per record, from one pass over the members."""
    members: dict[str, dict] = {}
    try:
        with tarfile.open(shard) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                head, _, base = member.name.rpartition("/")
                stem, _, suffix = base.partition(".")
                if suffix in RECORD_SUFFIXES:
                    key = f"{head}/{stem}" if head else stem
                    members.setdefault(key, {})[suffix] = (member.offset_data, member.size)
    except (tarfile.TarError, OSError) as e:
        raise DatasetError(f"{shard}: not a readable tar shard ({e}).") from None
    if not members:
        raise DatasetError(f"{shard}: no records (expected members {{key}}.png, {{key}}.json, {{key}}.safetensors).")
    for key, parts in members.items():
        missing = set(RECORD_SUFFIXES) - set(parts)
        if missing:
            raise DatasetError(f"{shard}: record {key!r} lacks {', '.join(f'{key}.{s}' for s in sorted(missing))}.")
    return [("tar", shard, item) for item in members.items()]


class FaceDataset(torch.utils.data.Dataset):
    """A map-style dataset over prepared records; create it with `open_dataset`.

    `dataset[i]` is `{"key", "image": PIL RGB size x size, "caption", "embedding": [D] float32,
    "kps": [5, 2] float32 crop pixels, "bbox": [4] float32 crop pixels, "identity",
    "embedding_model", "source"}`. Tar shards are indexed once (member offsets) and read by
    seeking, so random access is cheap; nothing is held open, so the dataset pickles to
    DataLoader workers.

    Attributes:
        info: the `dataset.json` contents (inferred from the first record for bare tar shards).
    """

    def __init__(self, info: dict, items: list[tuple]):
        self.info, self._items = info, items

    def __len__(self) -> int:
        return len(self._items)

    def metadata(self, i: int) -> dict:
        """Record `i`'s metadata object (`FaceRecord.metadata`; "key" always set) without decoding
        its image."""
        kind, where, item = self._items[i]
        if kind == "file":
            return item
        key, parts = item
        data = self._read_member(where, parts, "json")
        try:
            row = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{where}: {key}.json is not JSON ({e}).") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise DatasetError(f"{where}: {key}.json lacks the string field 'text'.")
        return {**row, "key": key}

    def __getitem__(self, i: int) -> dict:
        kind, where, item = self._items[i]
        row = self.metadata(i)
        key = row["key"]
        if kind == "file":
            png, face = _read(where / row["file_name"], "image"), _read(where / row["face"], "face tensors")
            png_at, face_at = str(where / row["file_name"]), str(where / row["face"])
        else:
            png, face = self._read_member(where, item[1], "png"), self._read_member(where, item[1], "safetensors")
            png_at, face_at = f"{where}:{key}.png", f"{where}:{key}.safetensors"
        image = _decode_png(png, png_at)
        size = self.info.get("size")
        if size and image.size != (size, size):
            raise DatasetError(f"{png_at}: image is {image.size}, expected {(size, size)} (dataset.json size).")
        tensors = _load_face(face, face_at, self.info.get("embedding_dim"))
        return {"key": key, "image": image, "caption": row["text"], "embedding": tensors["embedding"],
                "kps": tensors["kps"], "bbox": tensors["bbox"], "identity": row.get("identity", ""),
                "embedding_model": row.get("embedding_model", ""), "source": row.get("source", "")}

    @staticmethod
    def _read_member(shard: Path, parts: dict, suffix: str) -> bytes:
        offset, size = parts[suffix]
        try:
            with open(shard, "rb") as f:
                f.seek(offset)
                data = f.read(size)
        except OSError as e:
            raise DatasetError(f"{shard}: cannot read a .{suffix} member ({e.strerror}).") from None
        if len(data) != size:
            raise DatasetError(f"{shard}: truncated (a .{suffix} member ends early).")
        return data


def _open_one(path: Path) -> FaceDataset:
    if path.suffix == ".tar":
        if not path.is_file():
            raise DatasetError(f"{path}: no such tar shard.")
        dataset = FaceDataset({}, _index_shard(path))
        first = dataset.metadata(0)
        dataset.info = {"format": FORMAT, "version": VERSION, "layout": "webdataset", "size": None,
                        "count": len(dataset), "identities": None, "embedding_model": first.get("embedding_model"),
                        "embedding_dim": first.get("embedding_dim"), "shards": [str(path)]}
        return dataset
    marker = path / "dataset.json"
    if not marker.is_file():
        raise DatasetError(f"{path} is not an idgen dataset (no dataset.json); create one with "
                           "`idgen prepare-data PHOTOS_DIR OUT_DIR`, or pass a .tar shard.")
    try:
        info = json.loads(marker.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{marker}: not JSON text ({e}); prepare the dataset again with `idgen prepare-data`.") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DatasetError(f"{marker}: not an idgen dataset description (expected format {FORMAT!r}).")
    if not isinstance(info.get("version"), int) or info["version"] > VERSION:
        raise DatasetError(f"{marker}: format version {info.get('version')!r}; this idgen reads up to {VERSION}.")
    if info.get("layout") == "webdataset":
        items = [item for shard in info.get("shards", []) for item in _index_shard(path / shard)]
    elif info.get("layout") == "folder":
        items = _index_folder(path)
    else:
        raise DatasetError(f"{marker}: layout {info.get('layout')!r}, expected 'folder' or 'webdataset'.")
    if len(items) != info.get("count"):
        raise DatasetError(f"{marker} lists {info.get('count')} records but {path} holds {len(items)}; "
                           "the dataset is incomplete or was edited: prepare it again.")
    return FaceDataset(info, items)


def open_dataset(path: Union[PathLike, Sequence[PathLike]]) -> FaceDataset:
    """Open prepared records: a dataset folder (either layout, per its `dataset.json`), a single
    `.tar` shard, or a list of those (concatenated; their embeddings must agree).

    Raises:
        DatasetError: not an idgen dataset, or a malformed part (the message names the file, and
            the line or record).
    """
    if isinstance(path, (str, os.PathLike)):
        return _open_one(Path(path))
    paths = [Path(p) for p in path]
    if not paths:
        raise DatasetError("open_dataset: no dataset paths given.")
    datasets = [_open_one(p) for p in paths]
    if len(datasets) == 1:
        return datasets[0]
    kinds = {(d.info.get("embedding_model"), d.info.get("embedding_dim")) for d in datasets if len(d)}
    if len(kinds) > 1:
        raise DatasetError(f"cannot combine datasets with different embeddings: {sorted(map(str, kinds))}.")
    sizes = {d.info.get("size") for d in datasets}
    model, dim = kinds.pop() if kinds else (None, None)
    info = {"format": FORMAT, "version": VERSION, "layout": "combined", "size": sizes.pop() if len(sizes) == 1 else None,
            "count": sum(len(d) for d in datasets), "identities": None, "embedding_model": model,
            "embedding_dim": dim, "sources": [str(p) for p in paths]}
    return FaceDataset(info, [item for d in datasets for item in d._items])


__all__ = ["FORMAT", "VERSION", "DatasetWriter", "FaceDataset", "FaceRecord", "check_out_dir", "dataset_info",
           "open_dataset", "partial_dir", "publish", "reason_category"]
