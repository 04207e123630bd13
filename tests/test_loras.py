"""Several user LoRAs (`--lora PATH:SCALE`, repeated): fused one after the other on a plain UNet,
kept as active adapters beside FaceID's own LoRA, checked and recorded."""

import numpy as np
import pytest
import torch

from idgen.acceleration.options import SpeedOptions
from idgen.app.cli import build_parser
from idgen.app.speed_options import speed_arguments
from idgen.errors import CheckpointError
from idgen.models.loras import apply_loras
from idgen.testing import tiny_pipeline
from idgen.validation import InvalidArgumentError

import test_faceid
from test_acceleration import _lora_file


def _run(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe("photo of a person", num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator("cpu").manual_seed(0)).images


def test_two_loras_fuse_to_their_weighted_sum(tmp_path):
    a, b = _lora_file(tiny_pipeline("sd15").unet, tmp_path / "a.safetensors", seed=1), \
        _lora_file(tiny_pipeline("sd15").unet, tmp_path / "b.safetensors", seed=2)
    both, one_by_one, plain = tiny_pipeline("sd15"), tiny_pipeline("sd15"), tiny_pipeline("sd15")
    assert apply_loras(both, [(a, 0.5), (b, 0.7)]) == "fused"
    apply_loras(one_by_one, [(b, 0.7)])
    apply_loras(one_by_one, [(a, 0.5)])
    assert not getattr(both.unet, "peft_config", None)  # plain layers again
    assert np.abs(_run(both) - _run(one_by_one)).max() <= 1e-5  # order does not matter
    assert np.abs(_run(both) - _run(plain)).max() > 1e-3  # and they act


def test_several_loras_stay_active_beside_faceids_own(tmp_path):
    pipe = test_faceid.make_pipeline()
    a = _lora_file(pipe.unet, tmp_path / "a.safetensors", seed=1)
    b = _lora_file(pipe.unet, tmp_path / "b.safetensors", seed=2)
    assert apply_loras(pipe, [(a, 0.5), (b, 1.0)]) == "adapter"
    assert set(pipe.get_active_adapters()) == {"faceid", "user0", "user1"}


def test_a_file_that_is_no_lora_is_named(tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"weight": torch.zeros(2)}, str(bad))
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        apply_loras(tiny_pipeline("sd15"), [(str(bad), 1.0)])


def test_cli_takes_repeated_lora_flags_and_options_check_them():
    args = build_parser().parse_args(["generate", "--method", "faceid", "--face", "x.jpg",
                                      "--lora", "a.safetensors:0.5", "--lora", "b.safetensors"])
    options = SpeedOptions(**speed_arguments(args))
    assert options.loras == (("a.safetensors", 0.5), ("b.safetensors", 1.0))
    assert options.speed_record()["loras"] == [{"path": "a.safetensors", "scale": 0.5},
                                               {"path": "b.safetensors", "scale": 1.0}]
    with pytest.raises(InvalidArgumentError, match="twice"):
        SpeedOptions(loras=(("a", 1.0), ("a", 0.5)))
    with pytest.raises(InvalidArgumentError, match="loras\\[0\\] scale"):
        SpeedOptions(loras=(("a", float("nan")),))
