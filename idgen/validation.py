"""Checks of user-given values, one vocabulary for every entry point: the CLI's argument types
(`idgen.app.arguments`), the application's requests, the pipelines' input checks and the demo.

Each check returns the value (converted) or raises `InvalidArgumentError`, a `ValueError` whose
one-line message names the argument, what was expected and what was given. Python's `float()`
accepts "nan" and "inf", and NaN slips through every `<`/`>` comparison: the number checks here
are the one place that refuses them.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Optional

from idgen.errors import IdgenError


class InvalidArgumentError(IdgenError, ValueError):
    """An argument or option has a value outside what it accepts (the message names it)."""


#: Output sizes: diffusers' VAEs downsample by 8, and the CLI refuses sizes past the limit below
#: before anything is allocated (a 100000-px request would otherwise run for hours or be killed).
SIZE_MULTIPLE = 8
MIN_SIZE = 64
#: Default ceilings; raise them with the environment variables named in the messages.
DEFAULT_LIMITS = {"IDGEN_MAX_OUTPUT_PIXELS": 4096 * 4096, "IDGEN_MAX_BATCH": 16, "IDGEN_MAX_STEPS": 500}
#: `torch.Generator.manual_seed` takes unsigned 64-bit seeds.
MAX_SEED = 2**64 - 1


def env_limit(name: str) -> int:
    """The positive integer limit `name` (an environment variable), else its default in
    `DEFAULT_LIMITS`. Read when used, so a bad value fails the command that needs it, not the import."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return DEFAULT_LIMITS[name]
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {raw!r}; fix or unset it.")
    return value


def _describe_range(low, high) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f"≥ {low}" if low is not None else f"≤ {high}"


def check_number(name: str, value, *, low: Optional[float] = None, high: Optional[float] = None,
                 low_open: bool = False, hint: str = "") -> float:
    """`value` as a finite float in `[low, high]` (`(low, high]` with `low_open`).

    Raises:
        InvalidArgumentError: not a number, NaN/infinite, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}.{hint}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}.{hint}") from None
    if not math.isfinite(number):
        raise InvalidArgumentError(f"{name} must be a finite number, got {value!r}.{hint}")
    too_low = low is not None and (number <= low if low_open else number < low)
    if too_low or (high is not None and number > high):
        bound = f"> {low}" + (f" and ≤ {high}" if high is not None else "") if low_open else _describe_range(low, high)
        raise InvalidArgumentError(f"{name} must be {bound}, got {value!r}.{hint}")
    return number


def check_integer(name: str, value, *, low: Optional[int] = None, high: Optional[int] = None, hint: str = "") -> int:
    """`value` as an int in `[low, high]`; integral floats (3.0, as Gradio's number fields give)
    are accepted, 3.5 and "3.5" are not.

    Raises:
        InvalidArgumentError: not an integer, or out of range.
    """
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be an integer, got {value!r}.{hint}")
    number: Optional[int] = None
    if isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None:
        raise InvalidArgumentError(f"{name} must be an integer, got {value!r}.{hint}")
    if (low is not None and number < low) or (high is not None and number > high):
        raise InvalidArgumentError(f"{name} must be an integer {_describe_range(low, high)}, got {value!r}.{hint}")
    return number


def check_steps(name: str, value) -> int:
    """A number of denoising steps: 1 … `IDGEN_MAX_STEPS` (default 500: diffusers' schedulers index
    past their 1000 training timesteps at 1000 steps)."""
    limit = env_limit("IDGEN_MAX_STEPS")
    return check_integer(name, value, low=1, high=limit,
                         hint=" (raise IDGEN_MAX_STEPS for more)" if _is_above(value, limit) else "")


def check_seed(name: str, value) -> int:
    """A random seed: 0 … 2**64 - 1 (what `torch.Generator.manual_seed` takes)."""
    return check_integer(name, value, low=0, high=MAX_SEED)


def check_size(name: str, value) -> int:
    """An output width or height in pixels: a multiple of 8, at least 64 (the total is checked by
    `check_output_size`)."""
    size = check_integer(name, value, low=MIN_SIZE)
    if size % SIZE_MULTIPLE:
        raise InvalidArgumentError(
            f"{name} must be a multiple of {SIZE_MULTIPLE} (the VAE's downsampling), got {value!r}; "
            f"try {max(MIN_SIZE, size // SIZE_MULTIPLE * SIZE_MULTIPLE)}.")
    return size


def check_output_size(width: Optional[int], height: Optional[int], num_images: int = 1) -> None:
    """Refuse, before anything is allocated, an output of more than `IDGEN_MAX_OUTPUT_PIXELS`
    pixels per image (default 4096 x 4096) or more than `IDGEN_MAX_BATCH` images (default 16)."""
    batch_limit = env_limit("IDGEN_MAX_BATCH")
    check_integer("num_images", num_images, low=1, high=batch_limit,
                  hint=" (raise IDGEN_MAX_BATCH for more)" if _is_above(num_images, batch_limit) else "")
    limit = env_limit("IDGEN_MAX_OUTPUT_PIXELS")
    if width is not None and height is not None and width * height > limit:
        raise InvalidArgumentError(
            f"an output of {width}x{height} = {width * height} pixels is above the limit of {limit}; "
            "ask for a smaller width/height, or raise IDGEN_MAX_OUTPUT_PIXELS.")


def check_fraction(name: str, value) -> float:
    """A fraction in [0, 1] (e.g. the part of the steps an identity acts in)."""
    return check_number(name, value, low=0.0, high=1.0)


def check_scale(name: str, value, high: float = 100.0) -> float:
    """A conditioning scale (CFG, identity, ControlNet): finite, 0 … `high`."""
    return check_number(name, value, low=0.0, high=high)


def _is_above(value, limit: int) -> bool:
    try:
        return float(value) > limit
    except (TypeError, ValueError, OverflowError):
        return False


#: How each sampling argument of a pipeline call is checked (absent or None: not checked).
_SAMPLING_CHECKS = {
    "num_inference_steps": check_steps,
    "guidance_scale": check_scale, "min_guidance_scale": check_scale, "max_guidance_scale": check_scale,
    "identity_scale": check_scale, "controlnet_conditioning_scale": check_scale,
    "strength": lambda name, value: check_number(name, value, low=0.0, high=1.0, low_open=True),
    "fidelity": check_fraction, "noise_aug_strength": check_fraction,
    "num_images_per_prompt": lambda name, value: check_integer(name, value, low=1),
}


def check_sampling_arguments(arguments) -> None:
    """Check the sampling arguments of a pipeline call (`arguments`: its named arguments): steps
    ≥ 1, finite non-negative scales (each of a per-ControlNet/per-identity list), strength in
    (0, 1]. Raises InvalidArgumentError (a ValueError, as diffusers' `check_inputs`) naming the
    argument, before any model runs: NaN or 0 steps would otherwise give black images or a
    ZeroDivisionError from inside the scheduler."""
    for name, check in _SAMPLING_CHECKS.items():
        value = arguments.get(name)
        if value is None or isinstance(value, dict):  # dict: per-layer scales, checked by their adapter
            continue
        for item in value if isinstance(value, (list, tuple)) else (value,):
            check(name, item)
    steps, strength = arguments.get("num_inference_steps"), arguments.get("strength")
    if steps is not None and isinstance(strength, numbers.Real) and int(steps * strength) < 1:
        # diffusers' img2img runs int(steps * strength) steps: none would leave an empty schedule
        raise InvalidArgumentError(
            f"num_inference_steps={steps} with strength={strength:g} runs no denoising step "
            f"(int({steps} x {strength:g}) = 0); use at least {math.ceil(1 / strength)} steps or a higher strength.")


def names_list(names) -> tuple[str, ...]:
    """Names from a sequence or a comma-separated string (`"skin, nose"` -> `("skin", "nose")`;
    blanks dropped, None -> `()`)."""
    if names is None:
        return ()
    if isinstance(names, str):
        names = names.split(",")
    return tuple(str(n).strip() for n in names if str(n).strip())
