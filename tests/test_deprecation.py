"""Renamed arguments and module attributes warn and keep working; old and new argument names
together are refused."""

import types

import pytest

import idgen.pipelines as pipelines
from idgen.deprecation import renamed_attributes, take_renamed
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


def test_renamed_module_attributes_warn_and_are_the_same_object():
    module = types.ModuleType("demo")
    module.New = type("New", (), {})
    module.__getattr__ = renamed_attributes("demo", vars(module), {"Old": "New"})
    with pytest.warns(FutureWarning, match="`demo.Old` is deprecated.*use `New`"):
        assert module.Old is module.New
    with pytest.raises(AttributeError):
        module.Missing


@pytest.mark.parametrize("old", sorted(pipelines.RENAMED))
def test_old_pipeline_names_warn_and_are_the_new_classes(old):
    with pytest.warns(FutureWarning, match=f"idgen.pipelines.{old}` is deprecated"):
        assert getattr(pipelines, old) is getattr(pipelines, pipelines.RENAMED[old])
