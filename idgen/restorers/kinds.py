"""The face restorers idgen knows (`--enhance NAME[:W]`): for each, its registry component (the
official file), its loader, and how it is called on a batch of aligned crops."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from idgen.errors import IdgenError
from idgen.restorers.enhance import RestoreFunction
from idgen.restorers.codeformer import load_codeformer
from idgen.restorers.gfpgan import load_gfpgan
from idgen.restorers.restoreformer import load_restoreformer
from idgen.validation import check_number


@dataclass(frozen=True)
class RestorerKind:
    """One restorer: `component` (in `idgen.models.registry`), `load(path) -> module`,
    `run(module, batch, weight) -> batch`, `default_weight` (its fidelity knob's default; None: it
    has none) and `size(module)`, its crop size."""

    name: str
    component: str
    load: Callable[[str], nn.Module]
    run: Callable[[nn.Module, torch.Tensor, Optional[float]], torch.Tensor]
    size: Callable[[nn.Module], int]
    default_weight: Optional[float] = None


RESTORERS: dict[str, RestorerKind] = {k.name: k for k in (
    # w: CodeFormer's fidelity (0: the codebook's face, 1: closer to the input); 0.5 as the official script
    RestorerKind("codeformer", "codeformer", load_codeformer, lambda model, batch, weight: model(batch, w=weight),
                 default_weight=0.5, size=lambda model: model.img_size),
    # The stored noise (not GFPGANer's fresh draws): equal faces restore equally, video frames
    # do not flicker, and a frame's result does not depend on its batch.
    RestorerKind("gfpgan", "gfpgan", load_gfpgan,
                 lambda model, batch, weight: model(batch, randomize_noise=False),
                 size=lambda model: model.out_size),
    RestorerKind("restoreformer", "restoreformer", load_restoreformer, lambda model, batch, weight: model(batch),
                 size=lambda model: model.resolution),
)}


def restorer_kind(name: str) -> RestorerKind:
    """The `RestorerKind` called `name`; an `IdgenError` listing the known ones otherwise."""
    if name not in RESTORERS:
        raise IdgenError(f"unknown face restorer {name!r}; choose one of {', '.join(RESTORERS)}.")
    return RESTORERS[name]


def restorer_function(kind: RestorerKind, model: nn.Module, weight: Optional[float] = None) -> RestoreFunction:
    """`model` as a `RestoreFunction`: CPU float32 crops moved to its device and dtype, `weight`
    (the fidelity knob; default the kind's) passed where it takes one."""
    if weight is not None and kind.default_weight is None:
        raise IdgenError(f"{kind.name} has no fidelity weight (`{kind.name}:W`); only "
                         f"{', '.join(k.name for k in RESTORERS.values() if k.default_weight is not None)} take one.")
    weight = kind.default_weight if weight is None else check_number(f"{kind.name} weight", weight, low=0.0, high=1.0)
    param = next(model.parameters())

    def restore(batch: torch.Tensor) -> torch.Tensor:
        return kind.run(model, batch.to(param.device, param.dtype), weight).float().cpu()
    return restore
