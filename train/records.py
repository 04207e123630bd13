"""The prepared face dataset on disk: one aligned crop, caption, identity embedding and keypoints
per record, as a folder (Hugging Face imagefolder convention) or as WebDataset tar shards.

Folder format:
    dataset.json                  format, version, size, counts, embedding model/dim (written last:
                                  it marks the dataset complete)
    metadata.jsonl                one line per record: file_name, text, face, key, identity, source
    images/{key}.png              the aligned size x size RGB crop
    faces/{key}.safetensors       embedding [D] f32, kps [5, 2] f32, bbox [4] f32 (crop pixels)
    rejected.jsonl                photos left out, with the reason
WebDataset format: the same dataset.json / rejected.jsonl, and `shards/{part}-{index:06d}.tar`
whose members are `{key}.png`, `{key}.json` (the metadata line) and `{key}.safetensors`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from idgen.errors import DatasetError

FORMAT, VERSION = "idgen-faces", 1
TENSOR_SHAPES = {"kps": (5, 2), "bbox": (4,)}


@dataclass
class FaceRecord:
    """One training example. `image` is the aligned `size` x `size` RGB crop (PIL); `embedding`
    `[D]` float32 is the analyzer's raw identity embedding; `kps` `[5, 2]` and `bbox` `[4]` are in
    crop pixels."""

    key: str
    image: object
    caption: str
    embedding: np.ndarray
    embedding_model: str
    kps: np.ndarray
    bbox: np.ndarray
    identity: str = ""
    source: str = ""

    def metadata(self) -> dict:
        return {"file_name": f"images/{self.key}.png", "text": self.caption, "face": f"faces/{self.key}.safetensors",
                "key": self.key, "identity": self.identity, "source": self.source,
                "embedding_model": self.embedding_model, "embedding_dim": int(np.asarray(self.embedding).shape[-1])}


def _face_bytes(record: FaceRecord) -> bytes:
    from safetensors.numpy import save

    return save({"embedding": np.asarray(record.embedding, np.float32).reshape(-1),
                 "kps": np.asarray(record.kps, np.float32).reshape(5, 2),
                 "bbox": np.asarray(record.bbox, np.float32).reshape(4)})


def _png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


class DatasetWriter:
    """Writes a dataset atomically: into `OUT_DIR.partial-<pid>`, renamed to `OUT_DIR` by `close()`.

    On an exception inside the `with` block, or when nothing was added, the partial folder is
    removed and no `OUT_DIR` is left. `shard_size=None` writes the folder format, an int the
    WebDataset format with at most that many records per shard.
    """

    def __init__(self, out_dir, *, size: int, shard_size: Optional[int] = None, overwrite: bool = False,
                 part: str = "part0"):
        self.out_dir, self.size, self.shard_size, self.part = Path(out_dir), size, shard_size, part
        if self.out_dir.exists() and any(self.out_dir.iterdir()) and not overwrite:
            raise DatasetError(f"{self.out_dir} exists and is not empty; choose another folder or pass --overwrite.")
        self.overwrite = overwrite
        self.tmp = self.out_dir.with_name(f"{self.out_dir.name}.partial-{os.getpid()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        (self.tmp / ("shards" if shard_size else "images")).mkdir(parents=True)
        if not shard_size:
            (self.tmp / "faces").mkdir()
        self.count, self.rejected, self.identities, self.embedding = 0, Counter(), set(), None
        self._meta = open(self.tmp / ("metadata.jsonl" if not shard_size else "keys.txt"), "w")
        self._rejects = open(self.tmp / "rejected.jsonl", "w")
        self._tar, self._shards = None, []

    def add(self, record: FaceRecord) -> None:
        dim = (record.embedding_model, int(np.asarray(record.embedding).shape[-1]))
        if self.embedding is None:
            self.embedding = dim
        elif dim != self.embedding:
            raise DatasetError(f"record {record.key}: embedding {dim} differs from the dataset's {self.embedding}.")
        meta = record.metadata()
        if self.shard_size:
            if self._tar is None or self.count % self.shard_size == 0:
                self._next_shard()
            for suffix, data in (("png", _png_bytes(record.image)), ("json", json.dumps(meta).encode()),
                                 ("safetensors", _face_bytes(record))):
                info = tarfile.TarInfo(f"{record.key}.{suffix}")
                info.size = len(data)
                self._tar.addfile(info, io.BytesIO(data))
            self._meta.write(record.key + "\n")
        else:
            record.image.convert("RGB").save(self.tmp / meta["file_name"])
            (self.tmp / meta["face"]).write_bytes(_face_bytes(record))
            self._meta.write(json.dumps(meta) + "\n")
        self.count += 1
        self.identities.add(record.identity)

    def _next_shard(self) -> None:
        if self._tar is not None:
            self._tar.close()
        name = f"shards/{self.part}-{len(self._shards):06d}.tar"
        self._shards.append(name)
        self._tar = tarfile.open(self.tmp / name, "w")

    def reject(self, source: str, reason: str) -> None:
        self._rejects.write(json.dumps({"source": source, "reason": reason}) + "\n")
        self.rejected[reason.split(" (")[0].split(":")[0]] += 1

    def _finish_files(self) -> None:
        for handle in (self._tar, self._meta, self._rejects):
            if handle is not None:
                handle.close()
        if self.shard_size:
            (self.tmp / "keys.txt").unlink()

    def close(self) -> dict:
        """Write `dataset.json` and move the dataset into place; returns the summary."""
        self._finish_files()
        if self.count == 0:
            self.abort()
            reasons = ", ".join(f"{n} {r}" for r, n in self.rejected.items()) or "no photos"
            raise DatasetError(f"no usable face photo, nothing written to {self.out_dir} (rejected: {reasons}).")
        summary = {"format": FORMAT, "version": VERSION, "layout": "webdataset" if self.shard_size else "folder",
                   "size": self.size, "count": self.count, "rejected": sum(self.rejected.values()),
                   "rejected_by_reason": dict(self.rejected), "identities": len(self.identities),
                   "embedding_model": self.embedding[0], "embedding_dim": self.embedding[1], "shards": self._shards}
        (self.tmp / "dataset.json").write_text(json.dumps(summary, indent=2))
        if self.out_dir.exists():
            shutil.rmtree(self.out_dir)
        self.tmp.rename(self.out_dir)
        return summary

    def abort(self) -> None:
        self._finish_files()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False


# ------------------------------------------------------------------------------------- reading
def _load_face(data: bytes, where: str) -> dict:
    from safetensors.numpy import load

    try:
        tensors = load(data)
    except Exception as e:  # safetensors raises several types on foreign bytes
        raise DatasetError(f"{where}: not a safetensors face record ({type(e).__name__}).") from None
    for name, shape in {**TENSOR_SHAPES, "embedding": None}.items():
        if name not in tensors:
            raise DatasetError(f"{where}: no '{name}' tensor.")
        if shape is not None and tensors[name].shape != shape:
            raise DatasetError(f"{where}: '{name}' has shape {tensors[name].shape}, expected {shape}.")
    return tensors


class FaceDataset:
    """A map-style dataset over a prepared dataset (see the module docstring).

    `dataset[i]` is `{"key", "image": PIL RGB, "caption", "embedding": [D] f32, "kps": [5, 2],
    "bbox": [4], "identity", "embedding_model"}`. Tar shards are indexed once (member offsets) and
    read by seeking, so random access is cheap.
    """

    def __init__(self, info: dict, folder: Optional[Path] = None, shards: Sequence[Path] = ()):
        self.info, self.folder, self._items = info, folder, []
        if folder is not None:
            self._index_folder(folder)
        for shard in shards:
            self._index_shard(Path(shard))

    def _index_folder(self, folder: Path) -> None:
        meta = folder / "metadata.jsonl"
        if not meta.is_file():
            raise DatasetError(f"{folder}: no metadata.jsonl.")
        for n, line in enumerate(meta.read_text().splitlines(), 1):
            try:
                row = json.loads(line)
                row["file_name"], row["face"], row["text"]  # noqa: B018  (the required fields)
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DatasetError(f"{meta} line {n}: not a record ({type(e).__name__}: {e}).") from None
            self._items.append(("folder", row))

    def _index_shard(self, shard: Path) -> None:
        members: dict[str, dict] = {}
        try:
            with tarfile.open(shard) as tar:
                for member in tar.getmembers():
                    key, _, suffix = member.name.rpartition(".")
                    members.setdefault(key, {})[suffix] = (member.offset_data, member.size)
        except (tarfile.TarError, OSError) as e:
            raise DatasetError(f"{shard}: not a readable tar shard ({e}).") from None
        for key, parts in members.items():
            missing = {"png", "json", "safetensors"} - set(parts)
            if missing:
                raise DatasetError(f"{shard}: record {key!r} lacks {', '.join(sorted(missing))}.")
            self._items.append(("tar", (shard, parts)))

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict:
        from PIL import Image

        kind, item = self._items[i]
        if kind == "folder":
            row = item
            where = self.folder / row["face"]
            try:
                image = Image.open(self.folder / row["file_name"]).convert("RGB")
                face = _load_face(where.read_bytes(), str(where))
            except OSError as e:
                raise DatasetError(f"{self.folder}: record {row.get('key', i)}: {e}") from None
        else:
            shard, parts = item
            with open(shard, "rb") as f:
                def read(suffix):
                    f.seek(parts[suffix][0])
                    return f.read(parts[suffix][1])

                row = json.loads(read("json"))
                image = Image.open(io.BytesIO(read("png"))).convert("RGB")
                face = _load_face(read("safetensors"), f"{shard}:{row.get('key')}")
        return {"key": row.get("key", str(i)), "image": image, "caption": row["text"], "embedding": face["embedding"],
                "kps": face["kps"], "bbox": face["bbox"], "identity": row.get("identity", ""),
                "embedding_model": row.get("embedding_model", "")}


def open_dataset(path: Union[str, os.PathLike, Sequence]) -> FaceDataset:
    """Open a prepared dataset: its folder (either layout), a `.tar` shard, or a list of shards.

    Raises:
        DatasetError: not an idgen dataset, or a malformed record (named).
    """
    if isinstance(path, (list, tuple)):
        shards = [Path(p) for p in path]
        return FaceDataset({"format": FORMAT, "layout": "webdataset", "shards": [str(s) for s in shards]}, shards=shards)
    path = Path(path)
    if path.is_file() and path.suffix == ".tar":
        return open_dataset([path])
    marker = path / "dataset.json"
    if not marker.is_file():
        raise DatasetError(f"{path} is not an idgen dataset (no dataset.json); create one with "
                           "`idgen prepare-data PHOTOS_DIR OUT_DIR`.")
    try:
        info = json.loads(marker.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{marker}: not JSON ({e}).") from None
    if info.get("format") != FORMAT:
        raise DatasetError(f"{marker}: format {info.get('format')!r}, expected {FORMAT!r}.")
    if info.get("layout") == "webdataset":
        return FaceDataset(info, shards=[path / s for s in info.get("shards", [])])
    return FaceDataset(info, folder=path)
