"""Training examples as tensors: prepared face datasets (`idgen prepare-data`) and plain photo
folders (DreamBooth instance/class images)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from idgen.errors import DatasetError, ImageReadError

from idgen.image_io import list_photos
from idgen.image_io import load_image
from idgen.train.records import open_dataset


def image_to_tensor(image, resolution: int) -> torch.Tensor:
    """`[3, resolution, resolution]` float in [-1, 1]: shorter side resized to `resolution`
    (Lanczos), then centre-cropped. Crops of prepared datasets are square, so their keypoints
    only need the scale factor `resolution / size`."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    scale = resolution / min(w, h)
    if (w, h) != (resolution, resolution):
        image = image.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.LANCZOS)
        w, h = image.size
        left, top = (w - resolution) // 2, (h - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def is_prepared_dataset(path: Path) -> bool:
    path = Path(path)
    return path.is_file() and path.suffix == ".tar" or (path / "dataset.json").is_file()


class PhotoFolder(torch.utils.data.Dataset):
    """Every image under `root` (sorted), each with the same `caption`.

    Items: `{"pixel_values": [3, R, R] in [-1, 1], "caption": str}`.
    """

    def __init__(self, root: Path, resolution: int, caption: str):

        self.root, self.resolution, self.caption = Path(root), resolution, caption
        self.files = list_photos(self.root)
        bad = []
        for path in self.files:  # a few to a few hundred photos: check them all before training
            try:
                load_image(path)
            except ImageReadError as e:
                bad.append(f"{path.name} ({e})")
        if bad:
            raise DatasetError(f"{len(bad)} unreadable image(s) in {self.root}: " + "; ".join(bad[:3]))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        from PIL import Image


        try:
            image = Image.fromarray(load_image(self.files[i]))
        except ImageReadError as e:
            raise DatasetError(f"training image {self.files[i]}: {e}") from None
        return {"pixel_values": image_to_tensor(image, self.resolution), "caption": self.caption}


class FaceExamples(torch.utils.data.Dataset):
    """A prepared face dataset as tensors.

    Items: `{"pixel_values": [3, R, R] in [-1, 1], "face_embeds": [D] float32 (L2-normalised when
    `normalize`), "kps": [5, 2] float32 in pixels of the R x R image, "caption": str,
    "identity": str}`. `caption` overrides the dataset's captions when given. `source` is a
    dataset path (`open_dataset`) or an opened dataset (any sequence of record dicts).
    """

    def __init__(self, source, resolution: int, *, normalize: bool = False, caption: Optional[str] = None):
        if isinstance(source, (str, Path)):

            source = open_dataset(source)
        self.records = source
        if len(self.records) == 0:
            raise DatasetError(f"{source}: the dataset has no records.")
        self.resolution, self.normalize, self.caption = resolution, normalize, caption

    @property
    def embedding_dim(self) -> int:
        return int(self.records[0]["embedding"].shape[-1])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        record = self.records[i]
        image = record["image"]
        embeds = torch.from_numpy(np.asarray(record["embedding"], dtype=np.float32))
        if self.normalize:
            embeds = embeds / embeds.norm().clamp_min(1e-12)
        kps = torch.from_numpy(np.asarray(record["kps"], dtype=np.float32)) * (self.resolution / image.size[0])
        return {"pixel_values": image_to_tensor(image, self.resolution), "face_embeds": embeds, "kps": kps,
                "caption": self.caption if self.caption is not None else record["caption"],
                "identity": record.get("identity", "")}


def collate(items: list[dict]) -> dict:
    """Stack tensors; keep strings as lists."""
    return {k: torch.stack([it[k] for it in items]) if isinstance(items[0][k], torch.Tensor) else [it[k] for it in items]
            for k in items[0]}
