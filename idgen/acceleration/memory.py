"""Memory modes: how much of a pipeline lives on the accelerator, as three named trade-offs over
what diffusers offers (model / group offloading, VAE slicing and tiling, fp8 weight storage).

- "max": everything on the device; fastest, most memory.
- "balanced": diffusers' model CPU offload (one whole model on the device at a time: text
  encoders, identity adapter, UNet + ControlNet, VAE), VAE slicing (one image decoded at a time).
  The output is unchanged; a little slower (a model moves per call, not per step).
- "low": diffusers' group offloading at leaf level (each layer's weights come to the device just
  before it runs, overlapped with compute on a CUDA stream), VAE slicing and tiling. Weights barely
  occupy the device; slower (weights cross PCIe every step). VAE tiling changes the decoded image
  slightly at sizes above the VAE's tile size (blended seams), nothing below it.
- `fp8=True` with any mode: the UNet's and ControlNet's weights are stored in float8_e4m3fn and
  upcast layer by layer to the compute dtype (diffusers' layerwise casting); halves their memory,
  lossy (a few grey levels).

Offloading needs an accelerator: on a CPU-only machine "balanced" and "low" apply only the VAE
settings (the weights are already in RAM) and say so in their notes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Union

import torch

from idgen.acceleration.options import MEMORY_MODES
from idgen.errors import IdgenError

logger = logging.getLogger(__name__)

#: What to try next when a job runs out of memory in a mode.
NEXT_MODE = {"max": "balanced", "balanced": "low", "low": None}
FP8_COMPONENTS = ("unet", "controlnet")


@dataclass
class MemoryMode:
    """What `set_memory_mode` did (kept on the pipeline as `pipe.memory_mode`)."""

    mode: str
    device: str
    offload: Optional[str] = None  # "model", "group (leaf level)" or None
    vae_slicing: bool = False
    vae_tiling: bool = False
    fp8: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "device": self.device, "offload": self.offload, "vae_slicing": self.vae_slicing,
                "vae_tiling": self.vae_tiling, "fp8": list(self.fp8), "notes": list(self.notes)}


def check_memory_mode(mode: str) -> str:
    if mode not in MEMORY_MODES:
        raise IdgenError(f"memory mode must be one of {', '.join(MEMORY_MODES)}, got {mode!r}.")
    return mode


def accelerator() -> Optional[torch.device]:
    """The accelerator offloading would load onto: CUDA, else MPS, else None."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return None


def set_memory_mode(pipe, mode: str, *, device: Union[str, torch.device, None] = None, fp8: bool = False) -> MemoryMode:
    """Put `pipe` in memory mode `mode` (see the module docstring). Call it once, on a pipeline
    still on the CPU (as loaded) or already on its device; it moves the pipeline itself.

    Args:
        mode: "max", "balanced" or "low".
        device: the accelerator to run on (default: `accelerator()`); `"cpu"` runs the offloading
            hooks on the CPU (useful only to test them).
        fp8: store the UNet / ControlNet weights in float8 (layerwise upcasting).

    Returns:
        A `MemoryMode` record, also kept as `pipe.memory_mode`.
    """
    check_memory_mode(mode)
    target = torch.device(device) if device is not None else accelerator()
    record = MemoryMode(mode=mode, device=(target or torch.device("cpu")).type)
    vae = getattr(pipe, "vae", None)
    if fp8:
        _store_in_fp8(pipe, record)
    if mode == "max":
        if target is not None:
            pipe.to(target)
    elif target is None:
        record.notes.append("no accelerator: the weights already live in RAM, offloading skipped")
    elif mode == "balanced":
        pipe.enable_model_cpu_offload(device=target)
        record.offload = "model"
    else:
        pipe.enable_group_offload(onload_device=target, offload_device=torch.device("cpu"), offload_type="leaf_level",
                                  use_stream=target.type == "cuda")
        record.offload = "group (leaf level)"
    if mode in ("balanced", "low") and vae is not None:
        for setting, wanted in (("slicing", True), ("tiling", mode == "low")):
            if not wanted:
                continue
            try:
                getattr(vae, f"enable_{setting}")()
            except (AttributeError, NotImplementedError):  # e.g. SVD's temporal VAE has neither
                record.notes.append(f"VAE {setting}: not available for {type(vae).__name__}")
                continue
            setattr(record, f"vae_{setting}", True)
    pipe.memory_mode = record
    logger.info("memory mode: %s", record.to_dict())
    return record


def _store_in_fp8(pipe, record: MemoryMode) -> None:
    for name in FP8_COMPONENTS:
        model = getattr(pipe, name, None)
        if model is None or not hasattr(model, "enable_layerwise_casting"):
            continue
        compute = model.dtype if model.dtype != torch.float8_e4m3fn else torch.bfloat16
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)
        record.fp8.append(name)
    if not record.fp8:
        record.notes.append("fp8 storage: no UNet/ControlNet with layerwise casting")
