"""The options every application command shares (`idgen generate`, `inpaint`, `swap`, `restore`
and the demo's tabs); each command's request adds its own. `None` means the method's official
default, and `record.json` holds the value actually used."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(kw_only=True)
class RunOptions:
    """Sampling seed and steps, the face backend, and the embedded-default rule
    (`embedded_default`: True forces it, False forbids it, None uses it when nothing is configured)."""

    seed: int = 0
    steps: Optional[int] = None
    face_backend: Optional[str] = None
    embedded_default: Optional[bool] = None


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
