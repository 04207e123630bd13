"""The options every application command shares (`idgen generate`, `inpaint`, `swap`, `restore`
and the demo's tabs); each command's request adds its own. `None` means the method's official
default, and `record.json` holds the value actually used."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from idgen.acceleration.options import SpeedOptions
from idgen.models.config import FACE_BACKENDS
from idgen.app.enhance_options import parse_enhance
from idgen.validation import InvalidArgumentError, check_number, check_scale, check_seed, check_steps



@dataclass(kw_only=True)
class RunOptions(SpeedOptions):
    """Sampling seed and steps, the face backend, the embedded-default rule (`embedded_default`:
    True forces it, False forbids it, None uses it when nothing is configured), the face post-pass
    (`enhance`: "codeformer", "gfpgan", "restoreformer", "codeformer:0.7"...; `enhance_blend`: how
    much of the restored face is used), and the speed and memory options (`SpeedOptions`)."""

    seed: int = 0
    steps: Optional[int] = None
    face_backend: Optional[str] = None
    embedded_default: Optional[bool] = None
    enhance: Optional[str] = None
    enhance_blend: float = 1.0

    def __post_init__(self):
        """Check (and normalise: Gradio's 3.0 → 3) every value; raises `InvalidArgumentError`
        naming the field, so a bad value never reaches the models."""
        super().__post_init__()
        self.seed = check_seed("seed", self.seed)
        if self.steps is not None:
            self.steps = check_steps("steps", self.steps)
        if self.enhance is not None:
            parse_enhance(self.enhance)
        self.enhance_blend = check_number("enhance_blend", self.enhance_blend, low=0.0, high=1.0)
        if self.face_backend is not None and self.face_backend not in FACE_BACKENDS:
            raise InvalidArgumentError(
                f"face_backend must be one of {', '.join(FACE_BACKENDS)} (or None), got {self.face_backend!r}.")


@dataclass(kw_only=True)
class PromptOptions(RunOptions):
    """A text-conditioned identity method: prompt, CFG, identity scale and the weights to use
    (`base`, `adapter`: paths overriding the configured ones)."""

    prompt: str = "photo of a person"
    negative_prompt: Optional[str] = None
    guidance_scale: Optional[float] = None
    identity_scale: Optional[float] = None
    base: Optional[str] = None
    adapter: Optional[str] = None

    def __post_init__(self):
        super().__post_init__()
        for name in ("guidance_scale", "identity_scale"):
            if getattr(self, name) is not None:
                setattr(self, name, check_scale(name, getattr(self, name)))
