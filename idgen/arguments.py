"""argparse types for the CLI's numeric options, built on `idgen.validation`: a bad value is a
usage error (exit 2) whose message names the option, e.g.
`idgen generate: error: argument --steps: must be an integer between 1 and 1000, got '-1'`."""

from __future__ import annotations

import argparse
from typing import Callable, Optional

from idgen import validation
from idgen.validation import InvalidArgumentError


def _typed(check: Callable[[str, str], object]) -> Callable[[str], object]:
    """An argparse type from a check `(name, text) -> value`: its error becomes argparse's own
    (argparse prefixes the option's name, so the check's name is left out of the message)."""
    name = "value"

    def convert(text: str):
        try:
            return check(name, text)
        except InvalidArgumentError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"{name} ")) from None

    convert.__name__ = check.__name__.removeprefix("check_")  # what argparse calls the type in messages
    return convert


def typed(parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type from a parser `text -> value` that raises `InvalidArgumentError`."""
    def check(name: str, text: str):
        return parse(text)

    check.__name__ = parse.__name__.lstrip("_")
    return _typed(check)


steps = _typed(validation.check_steps)
seed = _typed(validation.check_seed)
size = _typed(validation.check_size)
fraction = _typed(validation.check_fraction)
scale = _typed(validation.check_scale)


def integer(low: Optional[int] = None, high: Optional[int] = None) -> Callable[[str], int]:
    """An integer option in `[low, high]`."""
    return _typed(lambda name, text: validation.check_integer(name, text, low=low, high=high))


def number(low: Optional[float] = None, high: Optional[float] = None, low_open: bool = False) -> Callable[[str], float]:
    """A finite-number option in `[low, high]` (`(low, high]` with `low_open`)."""
    return _typed(lambda name, text: validation.check_number(name, text, low=low, high=high, low_open=low_open))


def _check_weighted_path(name: str, text: str) -> tuple[str, float]:
    """`PATH[:SCALE]` -> `(PATH, SCALE)`, SCALE a finite number in [-10, 10] (default 1.0). Only a
    last `:` followed by a number splits, so Windows drive letters and odd names stay paths."""
    path, sep, tail = text.rpartition(":")
    if not sep or not path:
        return text, 1.0
    try:
        float(tail)
    except ValueError:
        return text, 1.0
    return path, validation.check_number(name, tail, low=-10.0, high=10.0)


#: `PATH[:SCALE]` (a LoRA file and its weight).
weighted_path = _typed(_check_weighted_path)

