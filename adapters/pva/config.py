"""`PVAConfig`: the hyperparameters of PVA's identity encoder, in one place.

Defaults are the paper's released configuration (10 identity tokens, 4 layers) with the official
transformer settings (8 heads, feed-forward 2048, dropout 0.1) on ArcFace's 512-d embeddings;
`num_tokens=0` is the official `TransformNetwork` (one token per reference). The token width is
the UNet's `cross_attention_dim`, so it comes from the UNet unless given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Mapping, Optional

from idgen.errors import IdgenError

#: Attention heads of the official identity encoder (checkpoints do not store them).
OFFICIAL_NUM_HEADS = 8
#: The identity scale s of the official model (see `idgen.adapters.pva.attention`).
DEFAULT_IDENTITY_SCALE = 1.0


def check_identity_scale(scale) -> float:
    """`scale` as a float, or an `IdgenError` unless it is >= 0 (NaN included)."""
    if not float(scale) >= 0:
        raise IdgenError(f"identity_scale must be >= 0, got {scale}.")
    return float(scale)


@dataclass(frozen=True)
class PVAConfig:
    """Identity-encoder hyperparameters (see `PVAIdentityEncoder`)."""

    cross_attention_dim: int = 768
    embedding_dim: int = 512
    num_tokens: int = 10
    num_layers: int = 4
    num_heads: int = OFFICIAL_NUM_HEADS
    feedforward_dim: int = 2048
    dropout: float = 0.1

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            lowest = 0 if f.name in ("num_tokens", "dropout") else 1
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < lowest:
                raise IdgenError(f"PVA config {f.name} must be a number >= {lowest}, got {value!r}.")

    @classmethod
    def from_mapping(cls, config: Optional[Mapping[str, object]], *, cross_attention_dim: int) -> "PVAConfig":
        """Defaults overridden by `config` (unknown keys are an `IdgenError`); `cross_attention_dim`
        comes from the UNet unless `config` names it."""
        settings = {"cross_attention_dim": cross_attention_dim, **(config or {})}
        try:
            return cls(**settings)
        except TypeError:  # a keyword the dataclass does not have
            known = sorted(f.name for f in fields(cls))
            raise IdgenError(f"unknown PVA encoder settings {sorted(set(settings) - set(known))}; "
                             f"known: {known}.") from None

    def to_dict(self) -> dict:
        return asdict(self)
