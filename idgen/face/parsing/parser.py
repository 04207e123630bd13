"""`FaceParser`: per-pixel CelebAMask-HQ labels of a face crop with the BiSeNet of
zllrunning/face-parsing.PyTorch (`79999_iter.pth`, also shipped by facexlib as `parsing_bisenet.pth`).

Example:
    >>> parser = FaceParser.from_file("~/.idgen/face-parsing/79999_iter.pth")  # doctest: +SKIP
    >>> labels = parser.parse(crop)                  # crop: [H, W, 3] uint8 RGB -> [H, W] int64
    >>> skin = parser.mask(labels, include="face", exclude=("glasses", "mouth"))  # [H, W] float32
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np
import torch
from PIL import Image

from idgen.checkpoint import check_state_dict, load_checkpoint
from idgen.errors import CheckpointError, ModelNotFoundError
from idgen.face.parsing.bisenet import IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE, NUM_CLASSES, BiSeNet
from idgen.face.parsing.labels import Names, label_mask
from idgen.validation import InvalidArgumentError

#: The official release (Google Drive link of the face-parsing.PyTorch README).
OFFICIAL_FILE = "79999_iter.pth"
#: facexlib's copy of the same network and key names (`init_parsing_model("bisenet")`).
FACEXLIB_FILE = "parsing_bisenet.pth"
#: File names looked for in a folder, in this order.
PARSER_FILES = (OFFICIAL_FILE, FACEXLIB_FILE)
SOURCES = (
    f"{OFFICIAL_FILE}: https://drive.google.com/open?id=154JgKpzCPW82qINcVieuPH3fZ2e0P812 "
    "(zllrunning/face-parsing.PyTorch README)",
    f"{FACEXLIB_FILE}: https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth",
)
_TRACKED = "num_batches_tracked"


def bisenet_layout(n_classes: int = NUM_CLASSES) -> dict[str, tuple[int, ...]]:
    """`{key: shape}` of the official BiSeNet's state dict (with the BatchNorm `num_batches_tracked`
    scalars, which files saved by torch >= 0.4.1 hold)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in BiSeNet(n_classes).state_dict().items()}


def _missing(path: Path) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"no face-parsing model at {str(path)!r}: expected the file {OFFICIAL_FILE} or {FACEXLIB_FILE} "
        f"(or a folder holding one). Get one of:\n  " + "\n  ".join(SOURCES)
        + "\nidgen never downloads it by itself."
    )


def find_parser_file(path: Union[str, os.PathLike]) -> Path:
    """`path` itself if it is a file, else the first of `PARSER_FILES` inside the folder `path`.

    Raises:
        ModelNotFoundError: nothing there (the message names both files and where to get them).
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path
    for name in PARSER_FILES if path.is_dir() else ():
        if (path / name).is_file():
            return path / name
    raise _missing(path)


def load_bisenet(state_dict: Mapping[str, object], what: str = "face-parsing BiSeNet") -> BiSeNet:
    """A `BiSeNet(19)` in eval mode holding `state_dict` (the official keys, any float dtype; loaded
    as float32, tensors on the device they came on, meta included).

    `num_batches_tracked` entries are optional (files from torch < 0.4.1 lack them) and unused in eval.

    Raises:
        CheckpointError: a missing, misshaped, non-float or unexpected key (named).
    """
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{what}: expected a dict of tensors, got {type(state_dict).__name__}.")
    layout = bisenet_layout()
    weights, tracked = {}, {}
    for key, value in state_dict.items():
        (tracked if isinstance(key, str) and key.endswith(_TRACKED) else weights)[key] = value
    for key, value in tracked.items():
        if key not in layout:
            raise CheckpointError(f"{what}: unexpected key {key!r}; this is not a face-parsing BiSeNet checkpoint.")
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise CheckpointError(f"{what}: key {key!r} should be a scalar tensor, got {type(value).__name__}.")
    check_state_dict(weights, {k: s for k, s in layout.items() if not k.endswith(_TRACKED)}, what=what)
    with torch.device("meta"):
        model = BiSeNet(NUM_CLASSES)
    tracked = {k: v.reshape(()).to(torch.long) for k, v in tracked.items()}
    model.load_state_dict({**weights, **tracked}, strict=True, assign=True)
    return model.float().eval()


class FaceParser:
    """CelebAMask-HQ face parsing (`labels.CLASSES`) of one face crop at a time.

    Args:
        model: a `BiSeNet(19)` with weights (`load_bisenet`).
        device: where to run it (default: the model's device).

    The crop is a head-and-shoulders or face crop as in CelebAMask-HQ (the face roughly centred,
    filling most of the image); the network sees it at 512 x 512.
    """

    def __init__(self, model: BiSeNet, device: Optional[Union[str, torch.device]] = None):
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike], device: Optional[Union[str, torch.device]] = "cpu") -> "FaceParser":
        """Load `79999_iter.pth` / `parsing_bisenet.pth` (a file, or a folder holding one).

        Raises:
            ModelNotFoundError: no such file (the message says where to get it).
            CheckpointError: the file is corrupt, not a weights-only torch file, or has other keys.
        """
        file = find_parser_file(path)
        return cls.from_state_dict(load_checkpoint(file), device=device, what=f"face-parsing model {str(file)!r}")

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, object], device: Optional[Union[str, torch.device]] = None,
                        what: str = "face-parsing BiSeNet") -> "FaceParser":
        """Wrap the official state dict (see `load_bisenet`); `device=None` keeps the tensors' device."""
        return cls(load_bisenet(state_dict, what=what), device=device)

    def _check_image(self, image) -> np.ndarray:
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or min(array.shape[:2]) < 1:
            raise InvalidArgumentError(
                f"the face crop must be a [H, W, 3] uint8 RGB array, got {array.dtype} of shape {array.shape}."
            )
        return array

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """`[H, W, 3]` uint8 RGB -> `[1, 3, 512, 512]` float32 as the official `test.py`: PIL bilinear
        resize to 512 x 512, [0, 1], ImageNet mean/std."""
        array = self._check_image(image)
        if array.shape[:2] != (INPUT_SIZE, INPUT_SIZE):
            array = np.asarray(Image.fromarray(array).resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR))
        x = torch.from_numpy(np.array(array, dtype=np.uint8)).permute(2, 0, 1).float().div(255.0)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return ((x - mean) / std)[None].to(self.device)

    @torch.inference_mode()
    def logits(self, image: np.ndarray) -> torch.Tensor:
        """`[1, 19, 512, 512]` float32 logits of a `[H, W, 3]` uint8 RGB crop."""
        return self.model(self.preprocess(image).to(next(self.model.parameters()).dtype))

    def parse(self, image: np.ndarray) -> np.ndarray:
        """`[H, W]` int64 labels (0-18, `labels.CLASSES`) of a `[H, W, 3]` uint8 RGB crop of any size:
        the argmax at 512 x 512, resized back to H x W with nearest neighbour.

        Raises:
            InvalidArgumentError: `image` is not `[H, W, 3]` uint8.
        """
        height, width = self._check_image(image).shape[:2]
        labels = self.logits(image)[0].argmax(0).to(torch.uint8).cpu().numpy()
        if labels.shape != (height, width):
            labels = np.asarray(Image.fromarray(labels).resize((width, height), Image.NEAREST))
        return labels.astype(np.int64)

    @staticmethod
    def mask(labels: np.ndarray, include: Names = ("skin", "nose"), exclude: Names = ("glasses",)) -> np.ndarray:
        """`[H, W]` float32 in {0, 1}: where `labels` is in `include` and not in `exclude` (class or
        group names, `labels.GROUPS`); see `labels.label_mask`.

        Raises:
            IdgenError: an unknown name (the message lists the known ones).
        """
        return label_mask(labels, include=include, exclude=exclude)
