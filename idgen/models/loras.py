"""Applying LoRA files to a built pipeline, and finding the LoRA files a user has.

`apply_lora` reads the file safely (`idgen.checkpoint.load_checkpoint`: safetensors, or a
weights-only pickle) and hands the dict to diffusers' `load_lora_weights` (no hub, no path
guessing). Where the UNet carries no other LoRA, the LoRA is fused at its scale and its layers
unloaded, so the UNet is plain again (fused attention and `torch.compile` see ordinary layers, and
no per-step LoRA matmuls remain). Where it does (IP-Adapter-FaceID's own LoRA is a peft adapter
whose weight stays adjustable), fusing would disable that adapter (peft skips every adapter of a
merged layer), so the new LoRA stays an active adapter at its scale beside it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import torch

from idgen.checkpoint import load_checkpoint
from idgen.errors import CheckpointError, IdgenError

LoRASource = Union[str, os.PathLike, Mapping[str, torch.Tensor]]


def _peft_adapters(unet) -> list[str]:
    return list(getattr(unet, "peft_config", None) or {})


def _read_lora(weights: LoRASource) -> tuple[dict, str]:
    what = f"LoRA {str(weights)!r}" if not isinstance(weights, Mapping) else "LoRA"
    state_dict = dict(weights) if isinstance(weights, Mapping) else load_checkpoint(weights)
    if not any("lora" in k for k in state_dict):
        raise CheckpointError(f"{what} has no LoRA weights (first keys: {list(state_dict)[:3]}).")
    return state_dict, what


def apply_loras(pipe, loras: Sequence[tuple[LoRASource, float]], *, adapter_names: Optional[Sequence[str]] = None) -> str:
    """Load several LoRAs `[(file or state dict, scale), ...]` into `pipe`, each at its scale.

    Where the UNet carries no other LoRA, each is fused in turn and unloaded (merges add up, so
    the order does not matter); else all stay active peft adapters at their scales, beside the
    pipeline's own (e.g. FaceID's). `adapter_names` default to "user0", "user1", ...

    Returns:
        "fused" or "adapter" (how they were applied).

    Raises:
        IdgenError: the pipeline takes no LoRAs; `CheckpointError`: a file is no LoRA of this
            base (the message names it); `ModelNotFoundError`: no such file.
    """
    if not hasattr(pipe, "load_lora_weights"):
        raise IdgenError(f"{type(pipe).__name__} does not take LoRAs.")
    names = list(adapter_names or [f"user{i}" for i in range(len(loras))])
    if len(names) != len(loras):
        raise IdgenError(f"{len(loras)} LoRAs need as many adapter names, got {len(names)}.")
    fuse = not _peft_adapters(pipe.unet)
    for (weights, scale), name in zip(loras, names):
        state_dict, what = _read_lora(weights)
        try:
            pipe.load_lora_weights(state_dict, adapter_name=name)
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{what} does not fit this pipeline's UNet: {str(e).splitlines()[0]}") from None
        if fuse:
            pipe.fuse_lora(lora_scale=scale, adapter_names=[name])
            pipe.unload_lora_weights()
    if fuse:
        return "fused"
    pipe.set_adapters(names, [float(scale) for _, scale in loras])
    return "adapter"


def apply_lora(pipe, weights: LoRASource, *, scale: float = 1.0, adapter_name: str = "idgen_lora") -> str:
    """One LoRA at `scale`: `apply_loras(pipe, [(weights, scale)], adapter_names=[adapter_name])`."""
    return apply_loras(pipe, [(weights, scale)], adapter_names=[adapter_name])


def lora_files(folders: Iterable[os.PathLike]) -> list[str]:
    """The `.safetensors` files under `folders` (recursively; missing folders are skipped), sorted."""
    found = set()
    for folder in folders:
        folder = Path(folder)
        if folder.is_dir():
            found.update(str(p) for p in folder.rglob("*.safetensors") if p.is_file())
    return sorted(found)
