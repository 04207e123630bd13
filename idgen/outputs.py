"""Writing a job's results: all or nothing, never over an existing file.

`OutputFolder` is the one writer of the application's results (images, videos, `record.json`):
the names a job will write are claimed before it runs (so a clash fails in a second, not after a
long generation), each file is written under a temporary name in the same folder and moved into
place only when complete, and a job that fails removes what it had already written. A name that
exists is an `OutputError` unless the job was given `overwrite=True`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import numpy as np
from PIL import Image

from idgen.errors import OutputError
from idgen.provenance import Provenance, encode_image

PathLike = Union[str, os.PathLike]


class OutputFolder:
    """The output folder of one job.

    Use as a context manager around the writes: on an exception, every file written through it
    during the block is removed (a folder it created is removed too when left empty).

    Args:
        path: the folder (created with its parents; an existing file there is an error).
        overwrite: replace existing files of the same names instead of refusing.
        hint: how the user overrides a clash, for the messages (e.g. "pass --overwrite").
    """

    def __init__(self, path: PathLike, *, overwrite: bool = False, hint: str = "pass overwrite=True"):
        self.path = Path(path)
        self.overwrite = overwrite
        self.hint = hint
        self.written: list[Path] = []
        self._created = False
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"the output folder {str(self.path)!r} is a file; give a folder (or a new name).")

    def __enter__(self) -> "OutputFolder":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is not None:
            self.discard()

    def discard(self) -> None:
        """Remove what this job wrote (and the folder, if it made it and it is empty)."""
        for path in reversed(self.written):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.written.clear()
        if self._created:
            with contextlib.suppress(OSError):
                self.path.rmdir()

    def claim(self, *names: str) -> list[Path]:
        """The paths of `names`, checked free before the job runs; raises OutputError naming the
        first that exists (unless `overwrite`)."""
        paths = [self.path / name for name in names]
        if not self.overwrite:
            for path in paths:
                if path.exists():
                    raise OutputError(f"{path} already exists; idgen does not overwrite results: {self.hint}, "
                                      "or choose another output folder.")
        return paths

    def _ensure_folder(self) -> None:
        if not self.path.is_dir():
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OutputError(f"cannot create the output folder {str(self.path)!r}: {e.strerror or e}.") from None
            self._created = True

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """A temporary path (same folder, same suffix) to write `name` to; moved into place when
        the block ends cleanly, removed when it raises."""
        self._ensure_folder()
        final = self.path / name
        temporary = self.path / f".{final.stem}.{uuid.uuid4().hex[:8]}.partial{final.suffix}"
        try:
            yield temporary
            self._commit(temporary, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        self.written.append(final)

    def _commit(self, temporary: Path, final: Path) -> None:
        if self.overwrite:
            os.replace(temporary, final)
            return
        try:  # a hard link fails atomically if `final` appeared meanwhile: no check-then-write race
            os.link(temporary, final)
        except FileExistsError:
            raise OutputError(f"{final} already exists; idgen does not overwrite results: {self.hint}.") from None
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            if final.exists():  # a file system without hard links
                raise OutputError(f"{final} already exists; idgen does not overwrite results: {self.hint}.") from None
            os.replace(temporary, final)

    def write_image(self, name: str, image, provenance: Optional[Provenance] = None) -> Path:
        """Write `image` (PIL or RGB uint8 `[H, W, 3]`) as `name`, in the format of its suffix
        (png, jpg, webp); with `provenance`, watermarked and with the manifest in its metadata."""
        pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
        if provenance is not None:
            return self.write_bytes(name, encode_image(pixels, Path(name).suffix, provenance))
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(Path(name).suffix.lower(), "PNG")
        return self.write_with(name, lambda path: Image.fromarray(pixels).save(path, format=fmt))

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write `data` as `name`; returns its final path."""
        return self.write_with(name, lambda path: path.write_bytes(data))

    def write_with(self, name: str, write: Callable[[Path], object]) -> Path:
        """Let `write(temporary_path)` produce `name`; returns its final path."""
        try:
            with self.writing(name) as temporary:
                write(temporary)
        except OSError as e:
            if isinstance(e, OutputError):
                raise
            raise OutputError(f"could not write {self.path / name}: {e.strerror or e}.") from None
        return self.path / name
