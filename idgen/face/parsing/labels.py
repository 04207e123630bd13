"""The 19 CelebAMask-HQ classes of the face-parsing BiSeNet, and named groups of them.

The order is the official one: label 0 is the background and labels 1-18 follow the `atts` list of
zllrunning/face-parsing.PyTorch `prepropess_data.py` (the training masks were written with
`mask[sep_mask == 225] = l` for `l, att in enumerate(atts, 1)`).
"""

from __future__ import annotations

from typing import Iterable, Union

import numpy as np

from idgen.errors import IdgenError

#: Class names by label (index = label value).
CLASSES = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)
#: Label value of each class name.
LABELS = {name: label for label, name in enumerate(CLASSES)}

#: Named groups of classes (`eye_g` = glasses, `ear_r` = earring, `neck_l` = necklace).
GROUPS = {
    "face": ("skin", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "mouth", "u_lip", "l_lip"),
    "eyes": ("l_eye", "r_eye"),
    "brows": ("l_brow", "r_brow"),
    "lips": ("u_lip", "l_lip"),
    "ears": ("l_ear", "r_ear"),
    "glasses": ("eye_g",),
    "earrings": ("ear_r",),
    "necklace": ("neck_l",),
    "hair": ("hair",),
    "hat": ("hat",),
    "neck": ("neck",),
}

Names = Union[str, Iterable[str]]


def label_ids(names: Names) -> list[int]:
    """The label values of class and group names (one name or several), sorted, without repeats.

    Raises:
        IdgenError: a name is neither a class nor a group (the message lists the known ones).
    """
    names = [names] if isinstance(names, str) else list(names)
    ids = set()
    for name in names:
        if name in GROUPS:
            ids.update(LABELS[c] for c in GROUPS[name])
        elif name in LABELS:
            ids.add(LABELS[name])
        else:
            raise IdgenError(
                f"unknown face-parsing class {name!r}. Classes: {', '.join(CLASSES)}; "
                f"groups: {', '.join(GROUPS)}."
            )
    return sorted(ids)


def label_mask(labels: np.ndarray, include: Names = ("skin", "nose"), exclude: Names = ("glasses",)) -> np.ndarray:
    """A float32 `[H, W]` mask in {0, 1}: 1 where `labels` is one of `include` and none of `exclude`.

    Args:
        labels: `[H, W]` integer label map (`FaceParser.parse`).
        include: class or group names to mark (e.g. `"face"`, `("skin", "nose")`).
        exclude: class or group names to leave out even when `include` has them (e.g. `"face"`
            with `exclude="lips"`).

    Raises:
        IdgenError: an unknown name.
    """
    labels = np.asarray(labels)
    keep = np.isin(labels, label_ids(include)) & ~np.isin(labels, label_ids(exclude))
    return keep.astype(np.float32)
