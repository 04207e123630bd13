"""The speed and memory choices of one job, by name (light: no torch, so the CLI's `--help` and
the request dataclasses can use it). `idgen.app.speed_options.accelerate` applies them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from idgen.validation import InvalidArgumentError, check_integer, check_number

#: `speed`: "default" (the plain path) or "fast" (`enable_fast_inference`).
SPEEDS = ("default", "fast")
#: Few-step presets (`idgen.acceleration.presets.FAST_PRESETS` has their recipes).
FAST_PRESET_NAMES = ("lcm", "lightning", "hyper-sd", "tcd")
#: Memory modes (`idgen.acceleration.memory`).
MEMORY_MODES = ("max", "balanced", "low")


def check_loras(loras) -> tuple[tuple[str, float], ...]:
    """`[(path, scale), ...]` (or bare paths, scale 1.0) -> a tuple of `(str, float)` pairs, each
    scale finite in [-10, 10]; the same file twice is an error (its scales would add up silently)."""
    if isinstance(loras, (str, bytes)) or not isinstance(loras, (list, tuple)):
        raise InvalidArgumentError(f"loras must be a list of (path, scale) pairs, got {type(loras).__name__}.")
    out = []
    for i, item in enumerate(loras):
        path, scale = (item, 1.0) if isinstance(item, str) else tuple(item)
        if not isinstance(path, str) or not path:
            raise InvalidArgumentError(f"loras[{i}]: the path must be a non-empty string, got {path!r}.")
        out.append((path, check_number(f"loras[{i}] scale", scale, low=-10.0, high=10.0)))
    paths = [p for p, _ in out]
    if len(set(paths)) != len(paths):
        raise InvalidArgumentError("the same LoRA file is given twice; give it once with the summed scale.")
    return tuple(out)


@dataclass(kw_only=True)
class SpeedOptions:
    """How a job runs: `speed` ("default" | "fast"), a few-step preset `fast` with its distilled
    `fast_weights` file, user `loras` (`(file, scale)` pairs, e.g. LoRAs trained in the demo),
    DeepCache-style `step_cache` (a full UNet step every N steps; 0 = off), the `memory` mode
    ("max" | "balanced" | "low") and `fp8` weight storage."""

    speed: str = "default"
    fast: Optional[str] = None
    fast_weights: Optional[str] = None
    loras: tuple[tuple[str, float], ...] = ()
    step_cache: int = 0
    memory: str = "max"
    fp8: bool = False

    def __post_init__(self):
        """Raises `InvalidArgumentError` naming the field."""
        for name, value, allowed in (("speed", self.speed, SPEEDS), ("memory", self.memory, MEMORY_MODES)):
            if value not in allowed:
                raise InvalidArgumentError(f"{name} must be one of {', '.join(allowed)}, got {value!r}.")
        if self.fast is not None and self.fast not in FAST_PRESET_NAMES:
            raise InvalidArgumentError(f"fast must be one of {', '.join(FAST_PRESET_NAMES)} (or None), got {self.fast!r}.")
        if (self.fast is None) != (self.fast_weights is None):
            raise InvalidArgumentError(
                "a few-step preset needs its weights: give both fast (lcm, lightning, hyper-sd, tcd) and "
                "fast_weights (the LoRA or UNet file), or neither.")
        self.loras = check_loras(self.loras)
        self.step_cache = check_integer("step_cache", self.step_cache, low=0)
        if self.step_cache == 1:
            raise InvalidArgumentError("step_cache is the interval between full UNet steps: 0 (off) or >= 2, got 1.")
        if not isinstance(self.fp8, bool):
            raise InvalidArgumentError(f"fp8 must be True or False, got {self.fp8!r}.")

    def speed_key(self) -> tuple:
        """What a built pipeline was accelerated with (a pipeline is built once per key)."""
        return (self.speed, self.fast, self.fast_weights, self.loras, self.step_cache, self.memory, self.fp8)

    def speed_record(self) -> dict:
        return {"speed": self.speed, "fast": self.fast, "fast_weights": self.fast_weights,
                "loras": [{"path": path, "scale": scale} for path, scale in self.loras],
                "step_cache": self.step_cache, "memory": self.memory, "fp8": self.fp8}
