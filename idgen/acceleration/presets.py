"""Few-step presets: LCM-LoRA, SDXL-Lightning, Hyper-SD and TCD as one named choice.

The user brings the distilled weights (a LoRA, or for Lightning also a whole UNet file); a preset
puts them into the pipeline and sets what each method's authors prescribe: the scheduler (and its
timestep spacing), the number of steps and the CFG scale, plus TCD's `eta` (its gamma). The recipes:

| preset    | scheduler                          | steps              | CFG  | source                      |
|-----------|------------------------------------|--------------------|------|-----------------------------|
| lcm       | LCMScheduler                       | 4 (InstantID 5, Arc2Face 2) | 1.0 (InstantID 1.5) | LCM-LoRA card; the official InstantID app's LCM switch (5 steps, CFG 1.5); Arc2Face's README (2 steps, CFG 1.0) |
| lightning | EulerDiscrete, "trailing" spacing  | from the file name (1/2/4/8), else 4 | 0 | SDXL-Lightning card |
| hyper-sd  | DDIM, "trailing" (1 step: TCD, eta 1.0) | from the file name, else 8 | 0 (CFG LoRAs: 5.0) | Hyper-SD card |
| tcd       | TCDScheduler                       | 4                  | 0    | TCD card (eta 0.3)          |

The identity and IdentityNet scales are left as configured: the official InstantID LCM recipe
keeps them.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

import diffusers
import torch

from idgen.acceleration.fast import has_fused_attention
from idgen.checkpoint import load_checkpoint
from idgen.errors import CheckpointError, IdgenError
from idgen.models.loras import apply_lora

logger = logging.getLogger(__name__)

#: The adapter name the preset's LoRA is loaded under (`idgen.models.loras.apply_lora`).
LORA_NAME = "idgen_fast_preset"


@dataclass(frozen=True)
class FastPreset:
    """One few-step method: scheduler class (a diffusers name) and its config overrides, default
    steps and CFG scale, per-family recipes (`"instantid"`, `"arc2face"`) overriding them, and
    whether the weights may be a whole UNet (`unet_weights`) and must be SDXL (`sdxl_only`)."""

    name: str
    title: str
    scheduler: str
    scheduler_options: Mapping = field(default_factory=dict)
    steps: int = 4
    guidance_scale: float = 0.0
    eta: Optional[float] = None
    steps_from_filename: bool = False
    family_recipes: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    unet_weights: bool = False
    sdxl_only: bool = False


FAST_PRESETS = {
    p.name: p
    for p in (
        FastPreset("lcm", "LCM-LoRA", "LCMScheduler", steps=4, guidance_scale=1.0,
                   family_recipes={"instantid": (5, 1.5), "arc2face": (2, 1.0)}),
        FastPreset("lightning", "SDXL-Lightning", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"},
                   steps=4, guidance_scale=0.0, steps_from_filename=True, unet_weights=True, sdxl_only=True),
        FastPreset("hyper-sd", "Hyper-SD", "DDIMScheduler", {"timestep_spacing": "trailing"},
                   steps=8, guidance_scale=0.0, steps_from_filename=True),
        FastPreset("tcd", "TCD", "TCDScheduler", steps=4, guidance_scale=0.0, eta=0.3),
    )
}


@dataclass
class FastMode:
    """A preset applied to a pipeline (kept as `pipe.fast_mode`): what to pass to `__call__`.

    Attributes:
        preset: the `FastPreset`.
        weights: the file applied (None when given as a state dict).
        kind: "lora" or "unet".
        num_inference_steps, guidance_scale, eta: the call's defaults under this preset.
    """

    preset: FastPreset
    weights: Optional[str]
    kind: str
    num_inference_steps: int
    guidance_scale: float
    eta: Optional[float] = None

    @property
    def call_kwargs(self) -> dict:
        """`pipe(..., **mode.call_kwargs)`: steps, CFG and (TCD) eta."""
        kwargs = {"num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale}
        if self.eta is not None:
            kwargs["eta"] = self.eta
        return kwargs

    def to_dict(self) -> dict:
        return {"preset": self.preset.name, "weights": self.weights, "kind": self.kind, **self.call_kwargs,
                "scheduler": self.preset.scheduler}


def family(pipe) -> Optional[str]:
    """"instantid" for pipelines with an InstantID adapter, "arc2face" for Arc2Face, else None."""
    if hasattr(pipe, "identity_adapter") and hasattr(pipe, "controlnet"):
        return "instantid"
    if type(pipe).__name__.startswith("Arc2Face"):
        return "arc2face"
    return None


def steps_in_name(path: Optional[str]) -> Optional[int]:
    """The step count in a distilled checkpoint's name: `sdxl_lightning_4step_lora` -> 4,
    `Hyper-SDXL-8steps-CFG-lora` -> 8, else None."""
    match = re.search(r"(\d+)[-_]?steps?", Path(path).name, flags=re.IGNORECASE) if path else None
    return int(match.group(1)) if match else None


def _base_keys(unet) -> dict[str, str]:
    """The UNet's own weights by their plain diffusers name -> their name in `unet.state_dict()`:
    without identity processors' weights and LoRA layers an adapter added (FaceID's), and with
    peft's `.base_layer` taken out of the wrapped projections."""
    return {k.replace(".base_layer", ""): k for k in unet.state_dict() if ".processor." not in k and "lora_" not in k}


def _weights_kind(state_dict: Mapping[str, torch.Tensor], unet, what: str) -> str:
    """"lora" (peft, kohya or diffusers LoRA keys), "unet" (this UNet's diffusers or original
    keys), else a `CheckpointError` naming the file."""
    keys = list(state_dict)
    if any("lora" in k for k in keys):
        return "lora"
    if keys and (set(_base_keys(unet)) <= set(keys) or all(k.startswith("model.diffusion_model.") for k in keys)):
        return "unet"
    raise CheckpointError(
        f"{what} holds neither LoRA weights nor a UNet of this base (first keys: {keys[:3]}); give the "
        "preset's LoRA file (or, for Lightning, its UNet file) made for this base model.")


def _load_unet_weights(unet, state_dict: dict, what: str) -> None:
    """Load a distilled UNet state dict (diffusers layout, or the original `model.diffusion_model.*`
    layout converted by diffusers) into `unet`, all keys and shapes checked."""
    if all(k.startswith("model.diffusion_model.") for k in state_dict):
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

        state_dict = convert_ldm_unet_checkpoint(state_dict, dict(unet.config))
    own, names = unet.state_dict(), _base_keys(unet)
    missing, unexpected = sorted(set(names) - set(state_dict)), sorted(set(state_dict) - set(names))
    wrong = [k for k in set(names) & set(state_dict) if tuple(state_dict[k].shape) != tuple(own[names[k]].shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{what} is not a UNet of this base: missing {missing[:2]}, unexpected {unexpected[:2]}, "
            f"other shapes {wrong[:2]}.")
    unet.load_state_dict({names[k]: state_dict[k] for k in names}, strict=False)


def apply_fast_preset(
    pipe,
    name: str,
    weights: Union[str, os.PathLike, Mapping[str, torch.Tensor]],
    *,
    lora_scale: float = 1.0,
) -> FastMode:
    """Apply few-step preset `name` with its distilled `weights` to `pipe`: the LoRA goes in at
    `lora_scale` (`idgen.models.loras.apply_lora`: fused where the UNet has no other LoRA), or the
    UNet file replaces the UNet's weights; the scheduler becomes the preset's.

    Call it before `enable_fast_inference` (fused projections would not see a LoRA loaded later).
    The change is permanent for this pipeline: build a fresh one to go back.

    Returns:
        The `FastMode`; pass `mode.call_kwargs` to the call (steps, CFG, eta).

    Raises:
        IdgenError: unknown preset, a pipeline it does not fit (Lightning on SD1.5, no LoRA
            support), fused attention already on; `CheckpointError`/`ModelNotFoundError`: the file.
    """
    if name not in FAST_PRESETS:
        raise IdgenError(f"fast preset must be one of {', '.join(FAST_PRESETS)}, got {name!r}.")
    preset = FAST_PRESETS[name]
    if preset.sdxl_only and getattr(pipe, "text_encoder_2", None) is None and "XL" not in type(pipe).__name__:
        raise IdgenError(f"{preset.title} is distilled from SDXL; {type(pipe).__name__} is not an SDXL pipeline.")
    if has_fused_attention(pipe.unet):
        raise IdgenError("load the fast preset before enable_fast_inference(): fused attention projections "
                         "would not see its LoRA.")
    path = None if isinstance(weights, Mapping) else str(weights)
    what = f"{preset.title} weights {path!r}" if path else f"{preset.title} weights"
    state_dict = dict(weights) if path is None else load_checkpoint(path)
    kind = _weights_kind(state_dict, pipe.unet, what)
    if kind == "unet":
        if not preset.unet_weights:
            raise CheckpointError(f"{what} is a whole UNet; {preset.title} comes as a LoRA.")
        _load_unet_weights(pipe.unet, state_dict, what)
    else:
        if not hasattr(pipe, "load_lora_weights"):
            raise IdgenError(f"{type(pipe).__name__} does not take LoRAs, so it cannot use {preset.title}.")
        apply_lora(pipe, state_dict, scale=lora_scale, adapter_name=LORA_NAME)
    steps, guidance = preset.family_recipes.get(family(pipe), (preset.steps, preset.guidance_scale))
    eta = preset.eta
    named_steps = steps_in_name(path) if preset.steps_from_filename else None
    if named_steps is not None:
        steps = named_steps
    scheduler_name, options = preset.scheduler, dict(preset.scheduler_options)
    if name == "hyper-sd":
        if steps == 1:  # Hyper-SD's 1-step LoRAs sample with TCD at eta 1.0 (its card)
            scheduler_name, options, eta = "TCDScheduler", {}, 1.0
        if path and "cfg" in Path(path).name.lower():
            guidance = 5.0
    if name == "lightning" and steps == 1 and path and "x0" in Path(path).name.lower():
        options["prediction_type"] = "sample"  # the 1-step x0 UNet predicts the sample
    pipe.scheduler = getattr(diffusers, scheduler_name).from_config(pipe.scheduler.config, **options)
    mode = FastMode(preset=preset, weights=path, kind=kind, num_inference_steps=steps, guidance_scale=guidance, eta=eta)
    pipe.fast_mode = mode
    logger.info("fast preset: %s", mode.to_dict())
    return mode
