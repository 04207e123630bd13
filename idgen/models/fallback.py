"""The CLI's and the demo's weights rule: configured weights when they are all there; the tiny
embedded default when none of a capability's weights are configured; an error naming the missing
file when only some are, or when a configured location does not resolve (never a silent fallback)."""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

from idgen.errors import ConfiguredModelError, ModelNotFoundError

from idgen.models.config import load_config
from idgen.models.resolve import resolve_component

logger = logging.getLogger(__name__)


def any_configured(names: Sequence[str], config=None) -> bool:
    """Whether any of the registry components `names` is found or configured (a configured
    location that does not resolve counts: it is an error, not a reason for the default)."""
    config = config or load_config()
    for name in names:
        try:
            resolve_component(name, config=config)
            return True
        except ConfiguredModelError:
            return True
        except ModelNotFoundError:
            continue
    return False


def build_or_embedded(what: str, names: Sequence[str], build_real: Callable, build_tiny: Callable, *,
                      embedded_default: Optional[bool] = None, explicit: bool = False,
                      base: Sequence[str] = ()) -> tuple:
    """`(pipeline, is_embedded_default)`.

    Args:
        what: the capability, for the warning ("instantid", "video restoration", ...).
        names: the registry components the real pipeline needs.
        build_real: `config -> pipeline` (raises ModelNotFoundError naming what is missing).
        build_tiny: `() -> pipeline`, the embedded default.
        embedded_default: True forces the tiny default, False forbids it, None applies the rule.
        explicit: the user named weights (paths): never fall back.
        base: components the real pipeline also needs whose presence alone does not count as
            configured (a base model, there for other uses); a configured location among them that
            does not resolve is still an error, not a reason for the default.
    """
    if embedded_default:
        return build_tiny(), True
    config = load_config()
    try:
        return build_real(config), False
    except ConfiguredModelError:
        raise
    except ModelNotFoundError:
        if embedded_default is False or explicit or any_configured(names, config):
            raise
        for name in base:
            try:
                resolve_component(name, config=config)
            except ConfiguredModelError:
                raise
            except ModelNotFoundError:
                continue
        logger.warning("no weights configured for %s: using the tiny embedded default", what)
        return build_tiny(), True
