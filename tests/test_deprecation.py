"""Renamed arguments warn once and keep working; old and new names together are refused."""

import pytest

from idgen.deprecation import take_renamed
from idgen.errors import IdgenError


def test_old_name_warns_and_is_taken():
    kwargs = {"ip_adapter_scale": 0.3, "other": 1}
    with pytest.warns(FutureWarning, match="use `identity_scale`"):
        assert take_renamed(kwargs, "ip_adapter_scale", "identity_scale", None) == 0.3
    assert kwargs == {"other": 1}


def test_new_name_alone_is_silent(recwarn):
    assert take_renamed({}, "ip_adapter_scale", "identity_scale", 0.5) == 0.5
    assert not recwarn.list


def test_both_names_are_refused():
    with pytest.raises(IdgenError, match="give only `identity_scale`"):
        take_renamed({"ip_adapter_scale": 0.3}, "ip_adapter_scale", "identity_scale", 0.5)
