"""Building the face post-pass (`--enhance NAME[:W]`) from the configured files: the restorer
(CodeFormer, GFPGAN, RestoreFormer++), and, where present, the face parser (paste masks) and
facefusion's occluder. Same weights rule as the pipelines (`idgen.models.fallback`): the official
file when configured, the tiny random restorer of the same architecture when none is, an error
naming the file when a configured location does not hold it."""

from __future__ import annotations

import functools
from typing import Optional

import torch

from idgen.errors import ConfiguredModelError, ModelNotFoundError
from idgen.face.parsing import FaceParser, OcclusionModel
from idgen.models.config import load_config
from idgen.models.fallback import build_or_embedded
from idgen.models.loading import loading
from idgen.models.resolve import resolve_component
from idgen.restorers.enhance import EnhanceOptions, FaceEnhancer
from idgen.restorers.kinds import restorer_function, restorer_kind
from idgen.testing.restorers import tiny_restorer


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _configured(component: str) -> Optional[str]:
    """The path of registry `component` when its file is found; None when it is not configured (a
    configured location that does not hold it is still an error). Resolved at every call, so a file
    configured while the demo runs is picked up."""
    try:
        return str(resolve_component(component, config=load_config()).path)
    except ConfiguredModelError:
        raise
    except ModelNotFoundError:
        return None


@functools.lru_cache(maxsize=4)
def _parser_at(path: str) -> FaceParser:
    with loading("face parser", path):
        return FaceParser.from_file(path, device=_device())


@functools.lru_cache(maxsize=4)
def _occluder_at(path: str) -> OcclusionModel:
    with loading("face occluder", path):
        return OcclusionModel.from_file(path)


def load_face_parser() -> Optional[FaceParser]:
    """The configured face parser (`79999_iter.pth`; loaded once per file), or None when there is none."""
    path = _configured("face_parsing")
    return None if path is None else _parser_at(path)


def load_occluder() -> Optional[OcclusionModel]:
    """The configured occluder (`xseg_1.onnx`...; loaded once per file), or None when there is none."""
    path = _configured("face_occluder")
    return None if path is None else _occluder_at(path)


@functools.lru_cache(maxsize=4)
def _restorer_at(name: str, path: str):
    with loading(f"face restorer {name}", path):
        return restorer_kind(name).load(path).to(_device())


@functools.lru_cache(maxsize=4)
def _tiny_restorer(name: str):
    return tiny_restorer(name)


def _restorer(name: str, embedded_default: Optional[bool]):
    """`(model, is_embedded_default)` by the weights rule; each file (and the tiny model) loaded once."""
    kind = restorer_kind(name)
    return build_or_embedded(
        f"--enhance {name}", [kind.component],
        lambda config: _restorer_at(name, str(resolve_component(kind.component, config=config).path)),
        lambda: _tiny_restorer(name), embedded_default=embedded_default)


def build_face_enhancer(name: str, weight: Optional[float] = None, options: EnhanceOptions = EnhanceOptions(), *,
                        embedded_default: Optional[bool] = None) -> tuple[FaceEnhancer, bool, list[str]]:
    """`(enhancer, is_embedded_default, notes)` for restorer `name` at fidelity `weight` (CodeFormer;
    None: its default). Models are loaded once per process (cached); the tiny embedded default
    pastes the whole crop (no parser: a random one would only cost time)."""
    kind = restorer_kind(name)
    model, embedded = _restorer(name, embedded_default)
    parser = None if embedded else load_face_parser()
    occluder = None if embedded or not options.keep_occluders else load_occluder()
    notes = []
    if not embedded and parser is None:
        notes.append("no face parser configured (79999_iter.pth, see `idgen doctor`): the whole aligned crop is "
                     "pasted back, feathered")
    enhancer = FaceEnhancer(restorer_function(kind, model, weight), parser=parser, occluder=occluder,
                            options=options, size=kind.size(model))
    return enhancer, embedded, notes
