"""Property-based tests (Hypothesis) of option validation: whatever text or value comes in, a
check returns a value inside its documented range or raises its one error type — never NaN,
never another exception. Derandomized, with a small example budget, so CI time stays bounded."""

from __future__ import annotations

import argparse
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idgen import arguments, validation
from idgen.app.edit import EditRequest
from idgen.app.generate import GenerationRequest
from idgen.validation import InvalidArgumentError

#: Per test, not a global profile (other fuzz files keep their own budgets).
FUZZ = settings(max_examples=150, deadline=None, derandomize=True)

#: Text an option may be given: numbers in every spelling, and junk.
option_text = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "-inf", "inf", "1e400", "0x10", "1_000", " 7 ", "", "3.0", "1e3", "--1", "+5", "٣"]),
    st.text(max_size=12),
)
#: Values a Python caller (or Gradio) may pass.
any_value = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                      st.lists(st.integers(), max_size=2))

TYPES = {
    "steps": (arguments.steps, lambda v: isinstance(v, int) and 1 <= v <= 500),
    "seed": (arguments.seed, lambda v: isinstance(v, int) and 0 <= v <= validation.MAX_SEED),
    "size": (arguments.size, lambda v: isinstance(v, int) and v >= 64 and v % 8 == 0),
    "fraction": (arguments.fraction, lambda v: 0.0 <= v <= 1.0),
    "scale": (arguments.scale, lambda v: 0.0 <= v <= 100.0),
    "strength": (arguments.number(0.0, 1.0, low_open=True), lambda v: 0.0 < v <= 1.0),
    "feather": (arguments.integer(0, 256), lambda v: isinstance(v, int) and 0 <= v <= 256),
}


@pytest.mark.parametrize("name", TYPES)
@FUZZ
@given(text=option_text)
def test_an_option_type_returns_a_value_in_range_or_a_usage_error(name, text):
    convert, in_range = TYPES[name]
    try:
        value = convert(text)
    except argparse.ArgumentTypeError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert not (isinstance(value, float) and math.isnan(value))
    assert in_range(value), (text, value)


@FUZZ
@given(value=any_value)
def test_check_number_is_finite_or_refuses(value):
    try:
        number = validation.check_number("x", value, low=-5, high=5)
    except InvalidArgumentError as e:
        assert str(e).startswith("x must be")
        return
    assert math.isfinite(number) and -5 <= number <= 5


@FUZZ
@given(value=any_value)
def test_check_integer_is_integral_or_refuses(value):
    try:
        number = validation.check_integer("n", value, low=0, high=10)
    except InvalidArgumentError as e:
        assert str(e).startswith("n must be")
        return
    assert type(number) is int and 0 <= number <= 10


@FUZZ
@given(steps=any_value, seed=any_value, guidance=any_value, width=any_value, num_images=any_value)
def test_a_generation_request_is_valid_or_refused_by_name(steps, seed, guidance, width, num_images):
    try:
        request = GenerationRequest(method="faceid", faces=["x.jpg"], steps=steps, seed=seed, guidance_scale=guidance,
                                    width=width, height=width, num_images=num_images)
    except InvalidArgumentError as e:
        assert any(name in str(e) for name in ("steps", "seed", "guidance_scale", "width", "num_images", "output"))
        return
    assert request.steps is None or 1 <= request.steps <= 500
    assert request.guidance_scale is None or math.isfinite(request.guidance_scale)
    assert request.width is None or request.width % 8 == 0


@FUZZ
@given(strength=any_value, feather=any_value, dilate=any_value)
def test_an_edit_request_is_valid_or_refused_by_name(strength, feather, dilate):
    try:
        request = EditRequest(target="t.jpg", sources=[["s.jpg"]], strength=strength, feather=feather, dilate=dilate)
    except InvalidArgumentError as e:
        assert any(name in str(e) for name in ("strength", "feather", "dilate"))
        return
    assert 0 < request.strength <= 1 and request.feather >= 0 and request.dilate >= 0


@FUZZ
@given(arguments_=st.dictionaries(st.sampled_from(["num_inference_steps", "guidance_scale", "strength",
                                                   "identity_scale", "controlnet_conditioning_scale"]),
                                  st.one_of(any_value, st.lists(st.floats(), max_size=3)), max_size=4))
def test_pipeline_sampling_checks_refuse_with_a_value_error(arguments_):
    try:
        validation.check_sampling_arguments(arguments_)
    except ValueError as e:
        assert any(name in str(e) for name in arguments_)
