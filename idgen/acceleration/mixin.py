"""`AccelerationMixin`: the speed and memory switches as methods of every idgen pipeline."""

from __future__ import annotations

import os
from typing import Mapping, Union

import torch

from idgen.acceleration.fast import enable_fast_inference
from idgen.acceleration.memory import set_memory_mode
from idgen.acceleration.presets import apply_fast_preset
from idgen.acceleration.step_cache import disable_step_cache, enable_step_cache


class AccelerationMixin:
    """`enable_fast_inference`, `enable_step_cache` / `disable_step_cache`, `load_fast_preset` and
    `set_memory_mode` on a pipeline (each documented in its `idgen.acceleration` module). They
    compose: load the preset first, then the fast paths, step cache and memory mode."""

    def enable_fast_inference(self, **options):
        """Fused attention projections, channels-last, half precision and regional
        `torch.compile` (`idgen.acceleration.fast.enable_fast_inference`)."""
        return enable_fast_inference(self, **options)

    def enable_step_cache(self, interval: int = 3, **options):
        """DeepCache-style reuse of the UNet's deep features between full steps every `interval`
        steps (`idgen.acceleration.step_cache.enable_step_cache`); the IdentityNet / ControlNet,
        when the pipeline has one, is cached with it."""
        options.setdefault("controlnet", getattr(self, "controlnet", None))
        return enable_step_cache(self.unet, interval, **options)

    def disable_step_cache(self) -> None:
        disable_step_cache(self.unet)

    def load_fast_preset(self, name: str, weights: Union[str, os.PathLike, Mapping[str, torch.Tensor]], **options):
        """Few-step preset `name` ("lcm", "lightning", "hyper-sd", "tcd") with its distilled
        weights (`idgen.acceleration.presets.apply_fast_preset`); returns the `FastMode` whose
        `call_kwargs` the calls take."""
        return apply_fast_preset(self, name, weights, **options)

    def set_memory_mode(self, mode: str, **options):
        """"max", "balanced" or "low" (`idgen.acceleration.memory.set_memory_mode`)."""
        return set_memory_mode(self, mode, **options)
