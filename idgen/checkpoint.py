"""Reading checkpoint files safely and checking them against an expected layout.

Only safetensors and torch pickles loaded with `weights_only=True` are read: no code from a
checkpoint is ever executed. Errors name the file and the first offending key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from safetensors.torch import load_file

from idgen.errors import CheckpointError, ModelNotFoundError

StateDict = dict[str, torch.Tensor]
PathOrStateDict = Union[str, os.PathLike, Mapping[str, object]]


def load_checkpoint(path: Union[str, os.PathLike], map_location: str = "cpu") -> dict:
    """Load a `.safetensors` file or a torch pickle (`.bin`, `.pt`, `.ckpt`) as a dict.

    Pickles are opened with `weights_only=True`. Nested dicts (e.g. `{"image_proj": {...},
    "ip_adapter": {...}}`) are returned as they are; for safetensors files whose keys look like
    `"image_proj.xxx"`, see `split_prefixed`.

    Raises:
        ModelNotFoundError: the file does not exist.
        CheckpointError: the file is truncated, corrupt, or not a tensor dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"checkpoint {str(path)!r} does not exist.")
    try:
        if path.suffix == ".safetensors":
            obj = load_file(str(path), device=map_location)
        else:
            obj = torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as e:  # torch/safetensors raise many types for truncated or foreign files
        raise CheckpointError(
            f"checkpoint {str(path)!r} could not be read as safetensors or a weights-only torch "
            f"file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). It may be "
            "truncated, of another format, or contain pickled code, which idgen never runs."
        ) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {type(obj).__name__}, not a dict of tensors."
        )
    return dict(obj)


def split_prefixed(state_dict: Mapping[str, object], prefixes: tuple[str, ...], *,
                   what: str = "checkpoint") -> dict[str, dict]:
    """Turn a flat `{"image_proj.a": t, "ip_adapter.1.b": t}` dict into
    `{"image_proj": {"a": t}, "ip_adapter": {"1.b": t}}`; nested dicts (`{"image_proj": {...}}`)
    pass through, and the two forms may be mixed. Keys under no prefix are left out.

    Raises:
        CheckpointError: `state_dict` is not a dict, a prefix holds something other than a dict,
            or a key is not a string (named, with `what`).
    """
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{what}: expected a dict of tensors, got {type(state_dict).__name__}.")
    out: dict[str, dict] = {p: {} for p in prefixes}
    for key, value in state_dict.items():
        _check_key(key, what)
        if key in out:
            if not isinstance(value, Mapping):
                raise CheckpointError(f"{what}: {key!r} is a {type(value).__name__}, expected a dict of tensors.")
            for inner in value:
                _check_key(inner, f"{what} {key}")
            out[key].update(value)
            continue
        head, _, rest = key.partition(".")
        if head in out and rest:
            out[head][rest] = value
    return out


def _check_key(key: object, what: str) -> None:
    if not isinstance(key, str):
        raise CheckpointError(f"{what}: key {key!r} is a {type(key).__name__}, not a string; this is not a state dict.")


def resolve_state_dict(source: PathOrStateDict) -> dict:
    """A path becomes `load_checkpoint(path)`; a mapping is returned as a dict.

    Raises:
        CheckpointError: `source` is neither (a list, a tensor, None...).
    """
    if isinstance(source, Mapping):
        return dict(source)
    if not isinstance(source, (str, os.PathLike)):
        raise CheckpointError(f"expected a checkpoint path or a dict of tensors, got {type(source).__name__}.")
    return load_checkpoint(source)


def check_state_dict(
    state_dict: Mapping[str, object],
    expected: Mapping[str, tuple[int, ...]],
    *,
    what: str,
    allow_extra: bool = False,
) -> None:
    """Check that `state_dict` has exactly the keys of `expected`, each a dense floating-point
    tensor (any float dtype: fp16 files load into fp32 modules) of that shape.

    Keys are checked in the order of `expected` so the error names the first bad key.

    Raises:
        CheckpointError: `state_dict` is not a dict; a key is missing, is not a tensor, is not a
            dense floating-point tensor, has the wrong shape, or (unless `allow_extra`) an
            unexpected key is present.
    """
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{what}: expected a dict of tensors, got {type(state_dict).__name__}.")
    for key, shape in expected.items():
        if key not in state_dict:
            raise CheckpointError(
                f"{what}: missing key {key!r} (expected shape {tuple(shape)}); the file is "
                "truncated or is not this kind of checkpoint."
            )
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{what}: key {key!r} is a {type(value).__name__}, not a tensor.")
        if not value.is_floating_point() or value.layout != torch.strided:
            raise CheckpointError(
                f"{what}: key {key!r} is a {value.dtype} {str(value.layout).replace('torch.', '')} tensor, expected "
                "dense floating-point weights (fp32/fp16/bf16); the file is damaged or of another kind."
            )
        if tuple(value.shape) != tuple(shape):
            raise CheckpointError(
                f"{what}: key {key!r} has shape {tuple(value.shape)}, expected {tuple(shape)}; "
                "the checkpoint was made for another model size or configuration."
            )
    if not allow_extra:
        extra = [k for k in state_dict if k not in expected]
        if extra:
            raise CheckpointError(
                f"{what}: unexpected key {extra[0]!r} ({len(extra)} unexpected in all); this is "
                "not the checkpoint kind that was asked for."
            )


#: Where basicsr-style training files (CodeFormer, GFPGAN...) keep the weights, in the order taken.
TRAINING_WRAPPERS = ("params_ema", "params", "state_dict")


def describe_source(source: object) -> str:
    """How a checkpoint argument is named in messages: the quoted path, else "the given state dict"."""
    return repr(str(source)) if isinstance(source, (str, os.PathLike)) else "the given state dict"


def unwrap_training_weights(state_dict: Mapping[str, object], what: str) -> dict:
    """The weights inside a basicsr-style training file: its `params_ema`, else `params`, else
    `state_dict` entry, nested (`{"params_ema": {...}}`, the .pth files) or flat
    (`"params_ema.<key>"`, as a safetensors copy stores it); else the dict as it is.

    Raises:
        CheckpointError: `state_dict` is not a dict, or a wrapper holds something else (named, with `what`).
    """
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{what}: expected a dict of tensors, got {type(state_dict).__name__}.")
    for wrapper in TRAINING_WRAPPERS:
        if isinstance(state_dict.get(wrapper), Mapping) or any(
                isinstance(k, str) and k.startswith(wrapper + ".") for k in state_dict):
            return split_prefixed(state_dict, (wrapper,), what=what)[wrapper]
    return dict(state_dict)


def assign_weights(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """Load a checked `state_dict` into `module` (built on the meta device) with `assign=True`:
    CPU float32 tensors, meta ones kept meta (nothing allocated). Returns the module in eval mode."""
    module.load_state_dict({k: v if v.is_meta else v.to("cpu", torch.float32) for k, v in state_dict.items()},
                           assign=True)
    return module.eval()


def first_mismatch(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Check `state_dict` against `module.state_dict()` keys and shapes (see `check_state_dict`;
    every entry must be floating point, as in every UNet and adapter idgen loads this way)."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    check_state_dict(state_dict, expected, what=what)


def module_state_shapes(module: torch.nn.Module, prefix: Optional[str] = None) -> dict[str, tuple]:
    """`{key: shape}` of a module's state dict, keys optionally prefixed with `prefix + "."`."""
    head = f"{prefix}." if prefix else ""
    return {head + k: tuple(v.shape) for k, v in module.state_dict().items()}
