"""Model configuration, resolution (folders, single files, HF cache, offline) and the doctor report."""

import json

import pytest
import torch

from idgen.errors import ConfiguredModelError, IdgenError, ModelNotFoundError
from idgen.models import (any_configured, build_or_embedded, doctor_report, format_doctor_report, load_config,
                          load_pipeline, resolve_component)
from idgen.testing import tiny_pipeline


@pytest.fixture
def home(empty_home):
    return empty_home


def _save_tiny_sd15(folder):
    pipe = tiny_pipeline("sd15")
    pipe.save_pretrained(folder)
    return pipe


def test_default_place_resolves_and_loads(home):
    from diffusers import StableDiffusionPipeline

    original = _save_tiny_sd15(home / "models" / "sd15")
    found = resolve_component("sd15")
    assert found.source == "default" and found.format == "folder"
    loaded = load_pipeline(StableDiffusionPipeline, found)
    for key, value in original.unet.state_dict().items():
        assert torch.equal(value, loaded.unet.state_dict()[key])


def test_missing_model_lists_places_and_files(home):
    with pytest.raises(ModelNotFoundError) as err:
        resolve_component("sdxl", override=str(home / "elsewhere"))
    message = str(err.value)
    assert str(home / "elsewhere") in message and str(home / "models" / "sdxl") in message
    assert "text_encoder_2/config.json" in message and "IDGEN_SDXL" in message
    assert "stabilityai/stable-diffusion-xl-base-1.0" in message


def test_incomplete_folder_names_missing_files(home):
    folder = home / "models" / "InstantID" / "ControlNetModel"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="missing diffusion_pytorch_model.safetensors or diffusion_pytorch_model.bin"):
        resolve_component("instantid_identitynet")


def test_env_var_overrides_config_file(home, tmp_path, monkeypatch):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    for p in (a, b):
        p.write_bytes(b"x")
    (home / "config.json").write_text(json.dumps({"models": {"instantid_adapter": str(a)}}))
    assert resolve_component("instantid_adapter").path == a
    assert resolve_component("instantid_adapter").source == "config"
    monkeypatch.setenv("IDGEN_INSTANTID_ADAPTER", str(b))
    found = resolve_component("instantid_adapter")
    assert found.path == b and found.source == "env"


def test_bad_config_file_is_a_clear_error(home):
    (home / "config.json").write_text("{not json")
    with pytest.raises(IdgenError, match="not valid JSON"):
        load_config()


def test_hub_id_from_an_empty_cache_fails_without_network(home, monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("a network request was made")

    monkeypatch.setattr(huggingface_hub.file_download, "get_session", no_network, raising=False)
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_component("sd15", override="some-org/some-model")


def test_hub_id_in_the_local_cache_resolves(home, tmp_path):
    repo = tmp_path / "hf" / "hub" / "models--some-org--tiny-sd"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    _save_tiny_sd15(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(snapshot.name)
    found = resolve_component("sd15", override="some-org/tiny-sd")
    assert found.source == "hf-cache" and found.path == snapshot


def test_single_file_checkpoint_needs_a_config_offline(home, tmp_path):
    from diffusers import StableDiffusionPipeline

    from safetensors.torch import save_file

    ckpt = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(2)}, str(ckpt))  # well-formed, of no architecture diffusers knows
    found = resolve_component("sd15", override=str(ckpt))
    assert found.format == "file"
    with pytest.raises(ModelNotFoundError, match="config_folder"):
        load_pipeline(StableDiffusionPipeline, found)


def test_doctor_report_present_and_missing(home):
    (home / "models" / "IP-Adapter-FaceID").mkdir(parents=True)
    (home / "models" / "IP-Adapter-FaceID" / "ip-adapter-faceid_sd15.bin").write_bytes(b"x")
    report = doctor_report()
    assert report["models"]["faceid_sd15"]["present"] is True
    assert report["models"]["sdxl"]["present"] is False
    assert report["models"]["sdxl"]["put_at"] == str(home / "models" / "sdxl")
    # by default the report does not ask torch (nor import it); `full=True` asks it for its device
    assert report["packages"]["torch"] and report["device"] is None and report["accelerator"]["torch_initialised"] is False
    full = doctor_report(full=True)
    assert full["device"] == "cpu" or full["device"].startswith(("cuda", "mps"))
    assert full["accelerator"]["torch_initialised"] is True and full["models"] == report["models"]
    text = format_doctor_report(report)
    assert "[ok]      faceid_sd15" in text and "[missing] sdxl" in text


def test_a_configured_location_that_does_not_resolve_is_an_error_naming_it(home, tmp_path, monkeypatch):
    _save_tiny_sd15(home / "models" / "sd15")  # the default place holds a model: never used instead
    monkeypatch.setenv("IDGEN_SD15", str(tmp_path / "missing"))
    with pytest.raises(ConfiguredModelError, match=f"IDGEN_SD15={tmp_path / 'missing'} does not resolve"):
        resolve_component("sd15")
    monkeypatch.delenv("IDGEN_SD15")
    (home / "config.json").write_text(json.dumps({"models": {"sdxl": str(tmp_path / "elsewhere")}}))
    with pytest.raises(ConfiguredModelError) as err:
        resolve_component("sdxl")
    assert f'"sdxl": "{tmp_path / "elsewhere"}"' in str(err.value) and str(home / "config.json") in str(err.value)
    report = doctor_report()
    assert report["models"]["sdxl"]["configured"].startswith('"models": {"sdxl"')
    assert report["models"]["sd15"]["present"] is True
    assert "[broken]  sdxl" in format_doctor_report(report)


def test_a_configured_location_never_falls_back_to_the_embedded_default(home, tmp_path, monkeypatch):
    monkeypatch.setenv("IDGEN_SDXL", str(tmp_path / "missing"))
    tiny = []
    with pytest.raises(ConfiguredModelError, match="IDGEN_SDXL"):
        build_or_embedded("instantid", ["sdxl"], lambda config: resolve_component("sdxl", config=config),
                          lambda: tiny.append(1))
    assert not tiny and any_configured(["sdxl"])
