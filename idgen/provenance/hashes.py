"""SHA-256 of model weights for the manifest's `models` field, cached so multi-GB checkpoints are
read once per version of the file.

The cache is a JSON file, `$IDGEN_CACHE_DIR/hashes.json` (default `~/.cache/idgen/hashes.json`):
resolved path -> size (bytes), mtime (ns) and digest; an entry counts only while size and mtime
still match. It is replaced atomically; an unreadable or corrupt cache is ignored and rebuilt.
Files under `CACHE_MIN_BYTES` are hashed directly (cheaper than the cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Union

from idgen.errors import ModelNotFoundError

PathLike = Union[str, os.PathLike]
#: Files below this size (bytes) are hashed without the cache.
CACHE_MIN_BYTES = 1 << 20
#: Files of a model folder that the folder hash covers: weights and the configs/tokenizer files
#: that change what the weights compute. Anything else (README, images, .cache/) is left out.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".gguf", ".msgpack", ".h5")
CONFIG_SUFFIXES = (".json", ".yaml", ".yml", ".txt", ".model")
_CHUNK = 4 << 20


def cache_path() -> Path:
    """`$IDGEN_CACHE_DIR/hashes.json`, else `~/.cache/idgen/hashes.json`."""
    root = os.environ.get("IDGEN_CACHE_DIR") or Path("~/.cache/idgen").expanduser()
    return Path(root) / "hashes.json"


def _stream_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb") as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def _load_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def _save_cache(path: Path, new_entries: dict) -> None:
    """Merge `new_entries` into the cache on disk (re-read now, so other processes' entries are
    kept) and replace it atomically. A cache that cannot be written is skipped silently: it only
    saves time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files = {**_load_cache(path), **new_entries}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".hashes.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": 1, "files": files}, f)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


class _HashCache:
    """One load of the cache for a batch of files, one save at the end."""

    def __init__(self):
        self.path = cache_path()
        self.entries = None
        self.new: dict = {}

    def sha256(self, path: Path) -> str:
        resolved = path.resolve()
        stat = resolved.stat()
        if stat.st_size < CACHE_MIN_BYTES:
            return _stream_sha256(resolved)
        if self.entries is None:
            self.entries = _load_cache(self.path)
        key = str(resolved)
        entry = self.entries.get(key)
        if (isinstance(entry, dict) and entry.get("size") == stat.st_size
                and entry.get("mtime_ns") == stat.st_mtime_ns and isinstance(entry.get("sha256"), str)):
            return entry["sha256"]
        digest = _stream_sha256(resolved)
        self.new[key] = self.entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        return digest

    def save(self) -> None:
        if self.new:
            _save_cache(self.path, self.new)


def file_sha256(path: PathLike) -> str:
    """SHA-256 hex of a file's bytes, streamed; cached by (resolved path, size, mtime_ns).

    Raises:
        ModelNotFoundError: `path` is not a file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"model file {str(path)!r} does not exist; cannot hash it for the provenance manifest.")
    cache = _HashCache()
    digest = cache.sha256(path)
    cache.save()
    return digest


def folder_files(folder: PathLike) -> list[Path]:
    """The weight and config files of a model folder (`WEIGHT_SUFFIXES`, `CONFIG_SUFFIXES`, any
    depth, hidden folders skipped), sorted by relative POSIX path."""
    folder = Path(folder)
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in WEIGHT_SUFFIXES + CONFIG_SUFFIXES and path.is_file():
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def folder_sha256(folder: PathLike) -> str:
    """SHA-256 hex of a diffusers-style model folder: the hash of the lines
    "<relative posix path>\\0<file sha256>\\n" of its `folder_files`, in order. Renaming, adding,
    removing or changing any weight/config file changes it; the folder's location does not.

    Raises:
        ModelNotFoundError: `folder` is not a folder, or holds no weight/config file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelNotFoundError(f"model folder {str(folder)!r} does not exist; cannot hash it for the provenance manifest.")
    files = folder_files(folder)
    if not files:
        raise ModelNotFoundError(f"model folder {str(folder)!r} holds no weight or config files "
                                 f"({', '.join(WEIGHT_SUFFIXES + CONFIG_SUFFIXES)}) to hash.")
    cache = _HashCache()
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(folder).as_posix()}\0{cache.sha256(path)}\n".encode("utf-8"))
    cache.save()
    return digest.hexdigest()


def model_sha256(path: PathLike) -> str:
    """`folder_sha256` for a folder, `file_sha256` for a file."""
    return folder_sha256(path) if Path(path).is_dir() else file_sha256(path)
