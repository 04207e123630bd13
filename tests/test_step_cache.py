"""The DeepCache-style step cache (`idgen.acceleration.step_cache`) on tiny models, CPU."""

import numpy as np
import pytest
import torch

from idgen.acceleration.step_cache import StepCache, disable_step_cache, enable_step_cache
from idgen.conditioning import draw_kps
from idgen.pipelines import StableDiffusionXLInstantIDPipeline
from idgen.testing import (
    TINY_RESAMPLER, random_instantid_state_dict, seeded, tiny_controlnet, tiny_pipeline, tiny_sdxl_components,
    tiny_svd_components, tiny_unet,
)
from idgen.validation import InvalidArgumentError

STEPS = 6
FACE = np.random.default_rng(1).normal(0, 20, (1, 512)).astype(np.float32)
KPS = np.array([[24, 28], [40, 28], [32, 36], [26, 44], [38, 44]], dtype=np.float32)

# Largest / mean |cached - plain| of the 64x64 output image (values in [0, 1]) at interval 3 and 6 steps,
# with about 3x margin over what was measured: sd15 0.019 / 0.0027, instantid 0.008 / 0.0012, instantid
# with its IdentityNet cached too 0.037 / 0.0041 (the random ControlNet's residuals are large).
TOLERANCE = {"sd15": (0.06, 0.01), "instantid": (0.03, 0.005), "instantid+controlnet": (0.12, 0.015)}


def _eval(components):
    return {k: v.eval() if isinstance(v, torch.nn.Module) else v for k, v in components.items()}


@pytest.fixture(scope="module")
def pipes():
    sd15 = tiny_pipeline("sd15")
    components = _eval(tiny_sdxl_components(0))
    components["controlnet"] = tiny_controlnet(components["unet"], 5).eval()
    instantid = StableDiffusionXLInstantIDPipeline(**components)
    instantid.load_instantid(random_instantid_state_dict(instantid.unet, seed=6), resampler_config=TINY_RESAMPLER)
    for pipe in (sd15, instantid):
        pipe.set_progress_bar_config(disable=True)
    return {"sd15": sd15, "instantid": instantid}


def call(pipe, steps=STEPS):
    kwargs = dict(prompt="photo of a person", num_inference_steps=steps, height=64, width=64, guidance_scale=5.0,
                  output_type="np", generator=torch.Generator("cpu").manual_seed(0))
    if isinstance(pipe, StableDiffusionXLInstantIDPipeline):
        kwargs.update(face_embeds=FACE, image=draw_kps((64, 64), KPS))
    return pipe(**kwargs).images


@pytest.fixture(scope="module")
def plain(pipes):
    return {kind: call(pipe) for kind, pipe in pipes.items()}


@pytest.fixture
def cached(pipes):
    """`cached(kind, interval, controlnet=False)` -> (pipe, handle); removed after the test."""
    enabled = []

    def enable(kind, interval, controlnet=False):
        pipe = pipes[kind]
        enabled.append(pipe.unet)
        return pipe, enable_step_cache(pipe.unet, interval, controlnet=pipe.controlnet if controlnet else None)

    yield enable
    for unet in enabled:
        disable_step_cache(unet)


@pytest.mark.parametrize("kind, controlnet", [("sd15", False), ("instantid", True)])
def test_interval_1_reproduces_the_plain_pipeline(cached, plain, kind, controlnet):
    pipe, handle = cached(kind, 1, controlnet=controlnet)
    np.testing.assert_array_equal(call(pipe), plain[kind])
    assert (handle.full_steps, handle.cached_steps) == (STEPS, 0)
    assert handle.controlnet_cached_steps == 0


@pytest.mark.parametrize("kind, controlnet", [("sd15", False), ("instantid", False), ("instantid", True)])
def test_interval_3_changes_the_output_within_tolerance(cached, plain, kind, controlnet):
    pipe, handle = cached(kind, 3, controlnet=controlnet)
    diff = np.abs(call(pipe) - plain[kind])
    max_bound, mean_bound = TOLERANCE[kind + ("+controlnet" if controlnet else "")]
    assert 1e-4 < diff.max() < max_bound and diff.mean() < mean_bound
    assert (handle.full_steps, handle.cached_steps) == (2, 4)  # steps 0 and 3 are full
    if controlnet:
        assert (handle.controlnet_full_steps, handle.controlnet_cached_steps) == (2, 4)


def test_identical_calls_give_identical_outputs(cached):
    # 4 steps at interval 3: the step after the last one would be a cached step if the call went on.
    pipe, handle = cached("instantid", 3, controlnet=True)
    first, second = call(pipe, steps=4), call(pipe, steps=4)
    np.testing.assert_array_equal(first, second)
    assert (handle.full_steps, handle.cached_steps, handle.controlnet_cached_steps) == (4, 4, 4)


def test_removal_restores_the_plain_pipeline(pipes, plain):
    pipe = pipes["instantid"]
    modules = [*pipe.unet.down_blocks, pipe.unet.mid_block, *pipe.unet.up_blocks, pipe.controlnet]
    hooks = len(pipe.unet._forward_pre_hooks), len(pipe.unet._forward_hooks)
    handle = enable_step_cache(pipe.unet, 3, controlnet=pipe.controlnet)
    call(pipe)
    disable_step_cache(pipe.unet)
    assert not any("forward" in vars(module) for module in modules)
    assert (len(pipe.unet._forward_pre_hooks), len(pipe.unet._forward_hooks)) == hooks
    np.testing.assert_array_equal(call(pipe), plain["instantid"])
    handle.remove()  # a second removal is harmless
    enable_step_cache(pipe.unet, 2, controlnet=pipe.controlnet).remove()  # and the UNet can take a new one


# -- the UNet alone -------------------------------------------------------------------------------


def unet_inputs(unet, batch=2, side=16, seed=0):
    xl = unet.config.addition_embed_type == "text_time"
    with seeded(seed):
        kwargs = {"encoder_hidden_states": torch.randn(batch, 7, unet.config.cross_attention_dim)}
        if xl:
            kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, 32), "time_ids": torch.randn(batch, 6)}
        return torch.randn(batch, 4, side, side), kwargs


@pytest.mark.parametrize("xl", [False, True])
def test_a_cached_step_is_the_shallow_branch_around_the_kept_deep_feature(xl):
    """A cached step equals the plain UNet with up_blocks[-2]'s output replaced by the one of the
    last full step: fresh conv_in / down_blocks[0] skips, fresh time embedding, kept deep feature."""
    unet = tiny_unet(xl=xl).eval()
    (x1, kwargs), (x2, _) = unet_inputs(unet, seed=0), unet_inputs(unet, seed=1)
    kept = []
    with torch.no_grad():
        hook = unet.up_blocks[-2].register_forward_hook(lambda module, args, output: kept.append(output))
        unet(x1, 500, **kwargs)
        hook.remove()
        hook = unet.up_blocks[-2].register_forward_hook(lambda module, args, output: kept[0])
        expected = unet(x2, 400, **kwargs).sample
        hook.remove()
        handle = enable_step_cache(unet, 2)
        unet(x1, 500, **kwargs)
        got = unet(x2, 400, **kwargs).sample
    assert handle.cached_steps == 1
    assert torch.equal(got, expected)


def test_cached_steps_run_only_the_shallow_blocks():
    unet = tiny_unet().eval()
    sample, kwargs = unet_inputs(unet)
    blocks = {"down0": unet.down_blocks[0], "down1": unet.down_blocks[1], "mid": unet.mid_block,
              "up0": unet.up_blocks[0], "up1": unet.up_blocks[1]}
    calls = dict.fromkeys(blocks, 0)
    for name, block in blocks.items():  # the resnets compute only when their block really runs
        block.resnets[0].register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    handle = enable_step_cache(unet, 3)
    with torch.no_grad():
        for t in (900, 700, 500, 300, 100):
            unet(sample, t, **kwargs)
    assert (handle.full_steps, handle.cached_steps) == (2, 3)
    assert calls == {"down0": 5, "down1": 2, "mid": 2, "up0": 2, "up1": 5}


def test_a_new_call_a_new_shape_or_reset_starts_with_a_full_step():
    unet = tiny_unet().eval()
    sample, kwargs = unet_inputs(unet)
    bigger, bigger_kwargs = unet_inputs(unet, side=24)
    handle = enable_step_cache(unet, 5)
    steps = []
    with torch.no_grad():
        for x, t, kw in [(sample, 900, kwargs), (sample, 700, kwargs),  # full, cached
                         (sample, 900, kwargs), (sample, 700, kwargs),  # timestep went up: a new call
                         (sample, 700, kwargs),                          # did not decrease: a new call
                         (bigger, 500, bigger_kwargs), (bigger, 300, bigger_kwargs)]:  # new shape: full
            before = handle.full_steps
            unet(x, t, **kw)
            steps.append("full" if handle.full_steps > before else "cached")
        handle.reset()
        unet(bigger, 100, **bigger_kwargs)
    assert steps == ["full", "cached", "full", "cached", "full", "full", "cached"]
    assert handle.full_steps == 5


def test_a_cached_controlnet_runs_again_when_its_conditioning_scale_changes():
    unet = tiny_unet().eval()
    controlnet = tiny_controlnet(unet, 5).eval()
    sample, kwargs = unet_inputs(unet)
    cond = torch.rand(2, 3, 32, 32)
    handle = enable_step_cache(unet, 3, controlnet=controlnet)
    with torch.no_grad():
        for t, scale in zip((900, 800, 700, 600, 500, 400), (0.8, 0.8, 0.0, 0.0, 0.0, 0.0)):
            down, mid = controlnet(sample, t, controlnet_cond=cond, conditioning_scale=scale, return_dict=False, **kwargs)
            unet(sample, t, down_block_additional_residuals=down, mid_block_additional_residual=mid, **kwargs)
    # UNet: full at steps 0 and 3; ControlNet: also at step 2, where the scale changed.
    assert (handle.full_steps, handle.cached_steps) == (2, 4)
    assert (handle.controlnet_full_steps, handle.controlnet_cached_steps) == (3, 3)


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("interval", [0, -1, 2.5, 3.0, True, "3", None])
def test_refuses_a_bad_interval(interval):
    with pytest.raises(InvalidArgumentError, match="interval must be an integer ≥ 1"):
        enable_step_cache(tiny_unet(), interval)


def test_refuses_models_it_cannot_cache():
    with pytest.raises(InvalidArgumentError, match="UNet2DConditionModel.*UNetSpatioTemporalConditionModel"):
        enable_step_cache(tiny_svd_components()["unet"])
    with pytest.raises(InvalidArgumentError, match="got Linear"):
        enable_step_cache(torch.nn.Linear(2, 2))
    unet = tiny_unet()
    with pytest.raises(InvalidArgumentError, match="controlnet must be a diffusers ControlNetModel"):
        enable_step_cache(unet, controlnet=tiny_unet())


def test_refuses_a_second_cache_on_the_same_models():
    unet, other = tiny_unet(), tiny_unet(1)
    controlnet = tiny_controlnet(unet)
    handle = enable_step_cache(unet, 3, controlnet=controlnet)
    assert isinstance(handle, StepCache) and handle.interval == 3
    with pytest.raises(InvalidArgumentError, match=r"this UNet already has a step cache \(interval 3\)"):
        enable_step_cache(unet, 2)
    with pytest.raises(InvalidArgumentError, match="this ControlNet already has a step cache"):
        enable_step_cache(other, 2, controlnet=controlnet)
    disable_step_cache(unet)
    enable_step_cache(unet, 2).remove()
    disable_step_cache(unet)  # nothing installed: nothing to do
