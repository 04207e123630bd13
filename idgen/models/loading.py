"""Loading model folders with errors that name the file: corrupt configs, truncated weights and
checkpoints of the wrong kind become a `CheckpointError` saying which file, what is wrong and what
to do, instead of diffusers' or transformers' internals (offline, their "check your internet
connection" text is wrong: nothing is ever downloaded here).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from pathlib import Path
from typing import Iterator, Optional

from idgen.errors import CheckpointError, IdgenError

#: Config files read by diffusers/transformers when a folder is loaded.
CONFIG_SUFFIX = ".json"
#: How deep configs and weights sit in a diffusers folder (`unet/config.json`, `unet/x.safetensors`).
MAX_DEPTH = 2


def _files(folder: Path, suffix: str) -> Iterator[Path]:
    for depth in range(MAX_DEPTH):
        yield from sorted(folder.glob("/".join(["*"] * depth + [f"*{suffix}"])))


def check_json_file(path: Path) -> dict:
    """`path` parsed as strict UTF-8 JSON holding an object; raises CheckpointError with the line
    and column of the first fault."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path} is not a text (UTF-8) config file (byte {e.start} is not UTF-8); "
                              "restore it from the model's original files.") from None
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read: {e.strerror or e}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                              "restore it from the model's original files.") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(data).__name__}.")
    return data


def check_safetensors_file(path: Path) -> None:
    """A `.safetensors` file whose header parses and whose tensors all lie inside the file: a
    truncated download fails here, naming the file, not deep inside the loader."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is truncated ({size} bytes, no safetensors header); download it again.")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            raise CheckpointError(f"{path} is truncated or not a safetensors file (its header claims {header_len} "
                                  f"bytes, the file has {size}); download it again.")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path} has a corrupt safetensors header; download it again.") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt safetensors header; download it again.")
    ends = [entry["data_offsets"][1] for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict) and len(entry.get("data_offsets", ())) == 2]
    needed = 8 + header_len + max(ends, default=0)
    if needed > size:
        raise CheckpointError(f"{path} is truncated: {size} bytes, its header needs {needed}; download it again.")


def check_model_files(path: os.PathLike) -> None:
    """Check the configs (strict JSON) and safetensors weights of a model folder (or one file)."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".safetensors":
            check_safetensors_file(path)
        return
    for config in _files(path, CONFIG_SUFFIX):
        check_json_file(config)
    for weights in _files(path, ".safetensors"):
        check_safetensors_file(weights)


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "internet connection" in text or "huggingface.co" in text or "couldn't connect" in text.lower():
        return "it is not a complete model folder (a config or weight file is missing or unreadable)"
    return text


@contextlib.contextmanager
def loading(what: str, path: os.PathLike) -> Iterator[None]:
    """Turn a loader's failure inside the block into a CheckpointError naming `what` and `path`
    (the original error stays chained for --debug)."""
    try:
        yield
    except CheckpointError as e:
        if str(path) in str(e):
            raise
        raise CheckpointError(f"{what} {path}: {e}") from e
    except IdgenError:
        raise
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, AttributeError, EOFError) as e:
        raise CheckpointError(f"could not load {what} from {path}: {_reason(e)}. Check that it is the right "
                              "model and complete (`idgen doctor` lists what each one needs).") from e


def from_pretrained(cls, path: os.PathLike, what: str, **kwargs):
    """`cls.from_pretrained(path, local_files_only=True, **kwargs)` after `check_model_files`,
    with failures as CheckpointError naming `what` (e.g. "the InstantID IdentityNet")."""
    check_model_files(path)
    kwargs.setdefault("local_files_only", True)
    with loading(what, path):
        return cls.from_pretrained(str(path), **kwargs)


def unet_config(base: os.PathLike) -> Optional[dict]:
    """The UNet config of a diffusers folder (None for a single-file checkpoint or a folder without one)."""
    path = Path(base) / "unet" / "config.json"
    return check_json_file(path) if path.is_file() else None


def check_controlnet_fits(controlnet_folder: os.PathLike, base: os.PathLike, what: str) -> None:
    """Refuse a ControlNet made for another base architecture (an SDXL IdentityNet as an SD1.5
    ControlNet, say) before loading either: compares their cross-attention widths."""
    unet = unet_config(base)
    config_path = Path(controlnet_folder) / "config.json"
    if unet is None or not config_path.is_file():
        return
    controlnet = check_json_file(config_path)
    width, expected = controlnet.get("cross_attention_dim"), unet.get("cross_attention_dim")
    if width is not None and expected is not None and width != expected:
        raise CheckpointError(
            f"{what} at {controlnet_folder} is for a base model with {width}-wide text features, but the base "
            f"model at {base} has {expected} (SD1.5: 768, SD2: 1024, SDXL: 2048); configure the {what} made for "
            "this base.")
