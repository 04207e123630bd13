"""Fast paths, few-step presets and memory modes (`idgen.acceleration`) on tiny weights, CPU.

Tolerances (max abs difference of `output_type="np"` images in [0, 1] against the plain path):
float32 fast paths (fused projections, channels-last, compiled blocks) 1e-4; bfloat16 0.05;
fp8 weight storage 0.08; VAE tiling below the tile size and model / group offloading: exact.
"""

import copy

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, LCMScheduler, TCDScheduler
from diffusers.models.attention_processor import FusedAttnProcessor2_0
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

import test_arc2face
import test_faceid
import test_instantid_pipeline as instantid
from idgen.acceleration.fast import enable_fast_inference, fuse_attention_projections
from idgen.acceleration.memory import set_memory_mode
from idgen.acceleration.options import FAST_PRESET_NAMES, SpeedOptions
from idgen.acceleration.presets import FAST_PRESETS, LORA_NAME, steps_in_name
from idgen.adapters.instantid import InstantIDAttnProcessor
from idgen.errors import CheckpointError, IdgenError, InsufficientMemoryError
from idgen.validation import InvalidArgumentError

# (build the pipeline, run it with overrides) for the three adapter families
FAMILIES = {
    "instantid": (instantid.make_pipeline, instantid.run),
    "faceid": (test_faceid.make_pipeline, test_faceid.run),
    "arc2face": (test_arc2face.make_pipeline, lambda pipe, **kw: pipe(**test_arc2face.inputs(**kw)).images),
}


def _diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


# -- fast paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fused_projections_and_channels_last_stay_within_float_tolerance(family):
    make, run = FAMILIES[family]
    plain = run(make())
    pipe = make()
    processors_before = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
    record = enable_fast_inference(pipe, dtype=None, compile=False)
    assert record.channels_last and pipe.fast_inference is record
    if family == "faceid":  # FaceID's own LoRA sits on every projection: kept unfused, said so
        assert record.fused_attention == 0 and "LoRA layers left unfused" in record.notes[0]
    else:
        assert record.fused_attention > 0
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    # only stock processors were fused: identity processors (FaceID's IP-Adapter) are kept
    for name, proc in pipe.unet.attn_processors.items():
        if processors_before[name].__name__ != "AttnProcessor2_0":
            assert type(proc) is processors_before[name]
    assert _diff(run(pipe), plain) <= 1e-4


def test_instantid_identity_processors_still_run_over_fused_projections():
    pipe = instantid.make_pipeline()
    enable_fast_inference(pipe, dtype=None, compile=False)
    seen = []

    def spy(p, step, timestep, tensors):
        seen.append(sum(isinstance(x, InstantIDAttnProcessor) for x in p.unet.attn_processors.values()))
        return tensors

    with_identity = instantid.run(pipe, callback_on_step_end=spy)
    assert seen == [8, 8]
    assert all(isinstance(p, FusedAttnProcessor2_0) for n, p in pipe.unet.attn_processors.items() if "attn2" in n)
    assert _diff(with_identity, instantid.run(pipe, identity_scale=0.0)) > 1e-3  # the identity still acts


def test_bfloat16_stays_within_tolerance():
    plain = instantid.run(instantid.make_pipeline())
    pipe = instantid.make_pipeline()
    record = enable_fast_inference(pipe, dtype=torch.bfloat16, compile=False)
    assert record.dtype == torch.bfloat16 and pipe.identity_adapter.dtype == torch.bfloat16
    assert _diff(instantid.run(pipe), plain) <= 0.05


def test_regional_compile_keeps_the_output_and_does_not_recompile_across_calls():
    from torch._dynamo.utils import counters

    plain = instantid.run(instantid.make_pipeline())
    pipe = instantid.make_pipeline()
    torch._dynamo.reset()
    record = enable_fast_inference(pipe, dtype=None, compile=True, compile_kwargs={"backend": "eager"})
    assert record.compiled == ["unet", "controlnet"]
    assert _diff(instantid.run(pipe), plain) <= 1e-4
    compiled = counters["frames"]["total"]
    assert compiled > 0
    instantid.run(pipe, seed=3)
    instantid.run(pipe, seed=4, identity_scale=0.5, controlnet_conditioning_scale=0.6)
    assert counters["frames"]["total"] == compiled  # same size: no new graph


def test_cfg_is_one_batch_and_the_identity_is_encoded_once_per_call():
    pipe = instantid.make_pipeline()
    calls = {"controlnet": [], "adapter": 0}
    pipe.controlnet.register_forward_pre_hook(
        lambda m, args, kwargs: calls["controlnet"].append(args[0].shape[0]), with_kwargs=True)

    def count_adapter(module, args):
        calls["adapter"] += 1

    pipe.identity_adapter.register_forward_pre_hook(count_adapter)
    instantid.run(pipe, num_inference_steps=3)
    assert calls["controlnet"] == [2, 2, 2]  # one IdentityNet call per step, on the [uncond, cond] batch
    assert calls["adapter"] == 1


def test_fusing_then_loading_a_lora_is_refused(tmp_path):
    pipe = instantid.make_pipeline()
    enable_fast_inference(pipe, dtype=None, compile=False)
    with pytest.raises(IdgenError, match="before enable_fast_inference"):
        pipe.load_fast_preset("lcm", _lora_file(pipe.unet, tmp_path / "lcm.safetensors"))


def test_only_stock_processors_are_fused():
    from diffusers.models.attention_processor import AttnProcessor

    unet = instantid.make_pipeline().unet
    name = next(n for n in unet.attn_processors if "attn2" in n)
    custom = AttnProcessor()  # any processor that is not diffusers' stock AttnProcessor2_0 (an identity one)
    unet.set_attn_processor({**unet.attn_processors, name: custom})
    fused, _ = fuse_attention_projections(unet)
    assert fused == len(unet.attn_processors) - 1
    assert unet.attn_processors[name] is custom
    assert not getattr(unet.get_submodule(name[: -len(".processor")]), "fused_projections", False)


def test_unfused_lora_layers_are_not_fused():
    pipe = instantid.make_pipeline()
    pipe.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v"]))
    assert fuse_attention_projections(pipe.unet)[0] == 0


# -- few-step presets ----------------------------------------------------------------------------


def _lora_file(unet, path, *, zero=False, seed=0):
    """A LoRA for `unet` in diffusers' file layout (random, or with B = 0: no effect)."""
    donor = copy.deepcopy(unet)
    torch.manual_seed(seed)
    donor.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                 init_lora_weights=True if zero else False))
    save_file({f"unet.{k}": v.contiguous() for k, v in get_peft_model_state_dict(donor).items()}, str(path))
    return path


def test_preset_names_are_one_list():
    assert tuple(FAST_PRESETS) == FAST_PRESET_NAMES


def test_lcm_preset_sets_the_official_instantid_recipe_and_fuses_the_lora(tmp_path):
    pipe = instantid.make_pipeline()
    plain_lcm = instantid.make_pipeline()
    plain_lcm.scheduler = LCMScheduler.from_config(plain_lcm.scheduler.config)
    mode = pipe.load_fast_preset("lcm", _lora_file(pipe.unet, tmp_path / "lcm.safetensors", zero=True))
    assert isinstance(pipe.scheduler, LCMScheduler)
    assert mode.call_kwargs == {"num_inference_steps": 5, "guidance_scale": 1.5}  # the official app's LCM switch
    assert mode.kind == "lora" and pipe.fast_mode is mode
    assert not pipe.get_list_adapters()  # fused and unloaded: plain layers remain
    # a LoRA with no effect gives exactly the plain pipeline under the same scheduler
    assert _diff(instantid.run(pipe, **mode.call_kwargs), instantid.run(plain_lcm, **mode.call_kwargs)) <= 1e-5
    other = instantid.make_pipeline()
    other.load_fast_preset("lcm", _lora_file(other.unet, tmp_path / "lcm2.safetensors"))
    assert _diff(instantid.run(other, **mode.call_kwargs), instantid.run(plain_lcm, **mode.call_kwargs)) > 1e-3


def test_a_preset_lora_beside_faceids_own_lora_keeps_it_active(tmp_path):
    """Fusing would switch FaceID's unfused LoRA off (peft skips the adapters of merged layers)."""
    pipe = test_faceid.make_pipeline()
    plain = test_faceid.make_pipeline()
    plain.scheduler = TCDScheduler.from_config(plain.scheduler.config)
    mode = pipe.load_fast_preset("tcd", _lora_file(pipe.unet, tmp_path / "tcd.safetensors", zero=True))
    assert set(pipe.get_active_adapters()) == {"faceid", LORA_NAME}
    assert _diff(test_faceid.run(pipe, **mode.call_kwargs), test_faceid.run(plain, **mode.call_kwargs)) <= 1e-5


def test_arc2face_lcm_is_two_steps_at_cfg_one(tmp_path):
    pipe = test_arc2face.make_pipeline()
    mode = pipe.load_fast_preset("lcm", _lora_file(pipe.unet, tmp_path / "lcm.safetensors"))
    assert mode.call_kwargs == {"num_inference_steps": 2, "guidance_scale": 1.0}
    images = pipe(**test_arc2face.inputs(**mode.call_kwargs)).images
    assert np.isfinite(images).all()


def test_tcd_and_hyper_sd_schedulers_steps_and_eta(tmp_path):
    pipe = test_faceid.make_pipeline()
    mode = pipe.load_fast_preset("tcd", _lora_file(pipe.unet, tmp_path / "tcd.safetensors"))
    assert isinstance(pipe.scheduler, TCDScheduler)
    assert mode.call_kwargs == {"num_inference_steps": 4, "guidance_scale": 0.0, "eta": 0.3}
    assert np.isfinite(test_faceid.run(pipe, **mode.call_kwargs)).all()

    pipe = test_faceid.make_pipeline()
    mode = pipe.load_fast_preset("hyper-sd", _lora_file(pipe.unet, tmp_path / "Hyper-SD15-2steps-lora.safetensors"))
    assert isinstance(pipe.scheduler, DDIMScheduler) and pipe.scheduler.config.timestep_spacing == "trailing"
    assert mode.call_kwargs == {"num_inference_steps": 2, "guidance_scale": 0.0}
    pipe = test_faceid.make_pipeline()
    mode = pipe.load_fast_preset("hyper-sd", _lora_file(pipe.unet, tmp_path / "Hyper-SD15-8steps-CFG-lora.safetensors"))
    assert mode.call_kwargs == {"num_inference_steps": 8, "guidance_scale": 5.0}
    pipe = test_faceid.make_pipeline()
    mode = pipe.load_fast_preset("hyper-sd", _lora_file(pipe.unet, tmp_path / "Hyper-SD15-1step-lora.safetensors"))
    assert isinstance(pipe.scheduler, TCDScheduler) and mode.call_kwargs["eta"] == 1.0


def test_lightning_unet_file_replaces_the_unet_weights(tmp_path):
    pipe = instantid.make_pipeline()
    donor = copy.deepcopy(pipe.unet)
    with torch.no_grad():
        for p in donor.parameters():
            p.add_(0.01)
    path = tmp_path / "sdxl_lightning_2step_unet.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    mode = pipe.load_fast_preset("lightning", path)
    assert mode.kind == "unet" and mode.call_kwargs == {"num_inference_steps": 2, "guidance_scale": 0.0}
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler) and pipe.scheduler.config.timestep_spacing == "trailing"
    for key, value in donor.state_dict().items():
        assert torch.equal(pipe.unet.state_dict()[key], value), key
    assert np.isfinite(instantid.run(pipe, **mode.call_kwargs)).all()


def test_preset_errors_name_the_problem(tmp_path):
    sd15 = test_faceid.make_pipeline()
    with pytest.raises(IdgenError, match="distilled from SDXL"):
        sd15.load_fast_preset("lightning", tmp_path / "x.safetensors")
    with pytest.raises(IdgenError, match="one of lcm, lightning"):
        sd15.load_fast_preset("turbo", tmp_path / "x.safetensors")
    junk = tmp_path / "junk.safetensors"
    save_file({"something.else": torch.zeros(2)}, str(junk))
    with pytest.raises(CheckpointError, match="neither LoRA weights nor a UNet"):
        sd15.load_fast_preset("lcm", junk)
    foreign = _lora_file(instantid.make_pipeline().unet, tmp_path / "sdxl_lora.safetensors")
    with pytest.raises(CheckpointError, match="does not fit"):
        sd15.load_fast_preset("lcm", foreign)
    with pytest.raises(IdgenError, match="does not exist"):
        sd15.load_fast_preset("lcm", tmp_path / "missing.safetensors")
    plain_sd15 = test_arc2face.make_pipeline()
    unet_file = tmp_path / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in plain_sd15.unet.state_dict().items()}, str(unet_file))
    with pytest.raises(CheckpointError, match="comes as a LoRA"):
        plain_sd15.load_fast_preset("tcd", unet_file)


def test_steps_in_file_names():
    assert steps_in_name("sdxl_lightning_4step_lora.safetensors") == 4
    assert steps_in_name("/m/Hyper-SDXL-12steps-CFG-lora.safetensors") == 12
    assert steps_in_name("pytorch_lora_weights.safetensors") is None


# -- memory modes ---------------------------------------------------------------------------------


def test_memory_modes_keep_the_output_where_they_promise():
    plain = instantid.run(instantid.make_pipeline())
    pipe = instantid.make_pipeline()
    record = set_memory_mode(pipe, "max")
    assert record.offload is None and _diff(instantid.run(pipe), plain) == 0.0

    pipe = instantid.make_pipeline()
    record = set_memory_mode(pipe, "balanced", device="cpu")  # the offload hooks, run on the CPU
    assert record.offload == "model" and record.vae_slicing and pipe.memory_mode is record
    assert _diff(instantid.run(pipe), plain) == 0.0
    assert _diff(instantid.run(pipe), plain) == 0.0  # the hooks re-arm

    pipe = instantid.make_pipeline()
    pipe.vae.tile_sample_min_size = 4096  # tiling starts above the VAE's tile size (1024 px for SDXL's)
    pipe.vae.tile_latent_min_size = 512
    record = set_memory_mode(pipe, "low", device="cpu")
    assert record.offload == "group (leaf level)" and record.vae_tiling
    assert _diff(instantid.run(pipe), plain) == 0.0


def test_without_an_accelerator_offloading_is_skipped_with_a_note():
    pipe = test_faceid.make_pipeline()
    record = set_memory_mode(pipe, "low")
    assert record.offload is None and "offloading skipped" in record.notes[0]
    assert pipe.vae.use_tiling and pipe.vae.use_slicing
    assert np.isfinite(test_faceid.run(pipe)).all()


def test_fp8_storage_is_lossy_but_close():
    plain = instantid.run(instantid.make_pipeline())
    pipe = instantid.make_pipeline()
    record = set_memory_mode(pipe, "max", fp8=True)
    assert record.fp8 == ["unet", "controlnet"]
    assert pipe.unet.conv_in.weight.dtype == torch.float8_e4m3fn
    assert 0 < _diff(instantid.run(pipe), plain) <= 0.08


def test_out_of_memory_advice_names_the_memory_modes():
    assert "--memory balanced" in InsufficientMemoryError.advice()
    with pytest.raises(IdgenError, match="memory mode must be one of"):
        set_memory_mode(test_faceid.make_pipeline(), "tiny")


# -- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, message", [
    ({"speed": "turbo"}, "speed must be one of"),
    ({"fast": "lcm"}, "needs its weights"),
    ({"fast_weights": "x.safetensors"}, "needs its weights"),
    ({"fast": "sdxl-turbo", "fast_weights": "x"}, "fast must be one of"),
    ({"step_cache": 1}, "0 \\(off\\) or >= 2"),
    ({"step_cache": -2}, "step_cache"),
    ({"memory": "none"}, "memory must be one of"),
])
def test_speed_options_are_checked(fields, message):
    with pytest.raises(InvalidArgumentError, match=message):
        SpeedOptions(**fields)
