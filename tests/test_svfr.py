"""SVFR-style video face restoration (tiny SVD models): widened UNet, window schedule, task code,
identity tokens and guidance, per-window scheduler steps, self-referred refinement, save/load, the
released weights' loader, bad input. Training: test_train_svfr.py."""

import numpy as np
import pytest
import torch

from idgen.adapters.svfr import (IDProjection, SVFRConfig, frame_weight_sums, init_svfr, load_id_projection,
                                 load_svfr_unet, official_state_dict, task_vector, triangle_weights, widen_conv_in,
                                 window_shift, window_starts)
from idgen.errors import CheckpointError, IdgenError
from idgen.pipelines import SVFRPipeline
from idgen.pipelines.pipeline_svfr import DEFAULT_WINDOW_BATCH, sharpest_frame
from idgen.testing import seeded, tiny_svd_components

from pipeline_checks import PipelineChecks

VIDEO = (np.random.default_rng(0).random((5, 32, 32, 3)) * 255).astype(np.uint8)
FEATURES = np.random.default_rng(1).normal(size=512).astype(np.float32)


def pipeline(seed=0):
    parts = tiny_svd_components(seed)
    unet = widen_conv_in(parts["unet"].eval())
    with seeded(3):
        projection = IDProjection(512, 32).eval()
        torch.nn.init.normal_(unet.conv_in.weight[:, 8:], std=0.05)  # a "trained" reference path
    pipe = SVFRPipeline(vae=parts["vae"].eval(), unet=unet, scheduler=parts["scheduler"], id_projection=projection)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, video=VIDEO, **kw):
    kw = {"self_refine": False, "num_inference_steps": 2, "window": 3, "overlap": 1, **kw}
    return pipe(video, generator=torch.Generator().manual_seed(0), **kw).frames


class TestSVFRPipeline(PipelineChecks):
    text_conditioned = False

    def get_pipeline(self):
        return pipeline()

    def get_inputs(self, seed: int = 0) -> dict:
        return dict(video=VIDEO, identity_features=FEATURES, self_refine=False, num_inference_steps=2, window=3,
                    overlap=1, output_type="np", generator=torch.Generator().manual_seed(seed))


def test_widened_unet_with_zero_new_weights_equals_the_original():
    original = tiny_svd_components(0)["unet"].eval()
    widened = widen_conv_in(tiny_svd_components(0)["unet"].eval())
    assert widened.config.in_channels == 12 and widened.conv_in.weight[:, 8:].abs().max() == 0
    x = torch.randn(1, 3, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    extra = torch.randn(1, 3, 4, 4, 4)
    context, ids = torch.randn(1, 1, 32), torch.tensor([[1.0, 0.0, 0.0]])
    with torch.no_grad():
        a = original(x, 10, encoder_hidden_states=context, added_time_ids=ids).sample
        b = widened(torch.cat([x, extra], dim=2), 10, encoder_hidden_states=context, added_time_ids=ids).sample
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    with pytest.raises(IdgenError, match="narrow"):
        widen_conv_in(widened, 8)


@pytest.mark.parametrize("frames,window,overlap", [(40, 16, 3), (17, 16, 4), (5, 16, 3), (33, 8, 0), (16, 16, 2)])
def test_windows_cover_every_frame_and_blend_to_total_weight_one(frames, window, overlap):
    w = min(window, frames)
    for step in range(7):
        shift = window_shift(step, overlap)
        sums = frame_weight_sums(frames, window, overlap, shift)
        assert (sums > 0).all(), "a frame is left out"
        normalised = np.zeros(frames)
        for start in window_starts(frames, window, overlap, shift):
            assert 0 <= start <= frames - w
            normalised[start: start + w] += triangle_weights(w) / sums[start: start + w]
        np.testing.assert_allclose(normalised, 1.0, atol=1e-6)
    if frames >= 2 * window:  # the seams move between steps, also without overlap
        grids = {tuple(window_starts(frames, window, overlap, window_shift(step, overlap))) for step in range(4)}
        assert len(grids) > 1, "the window grid does not move between steps"
    with pytest.raises(IdgenError, match="overlap"):
        window_starts(10, 4, 4)
    with pytest.raises(IdgenError, match="no frames"):
        window_starts(0, 4, 1)


def test_task_code_changes_the_output():
    pipe = pipeline()
    assert task_vector(["bfr", "inpaint"]).tolist() == [1.0, 0.0, 1.0]
    bfr, color = run(pipe, tasks=("bfr",)), run(pipe, tasks=("bfr", "colorize"))
    assert bfr.shape == (5, 32, 32, 3) and np.abs(bfr - color).max() > 1e-4


def test_identity_tokens_change_the_output_and_guidance_drops_them():
    pipe = pipeline()
    with_id = run(pipe, identity_features=FEATURES, reference=VIDEO[0])
    assert np.abs(with_id - run(pipe, reference=VIDEO[0])).max() > 1e-4
    # guidance 1 is the conditional branch alone; the identity shows there too
    assert np.abs(run(pipe, identity_features=FEATURES, reference=VIDEO[0], guidance_scale=1.0)
                  - run(pipe, reference=VIDEO[0], guidance_scale=1.0)).max() > 1e-4
    # guidance 0 is the negative branch alone: reference and identity dropped, the degraded clip
    # kept, which is exactly the path without reference and identity
    negative = run(pipe, identity_features=FEATURES, reference=VIDEO[0], guidance_scale=0.0)
    np.testing.assert_allclose(negative, run(pipe), atol=1e-4)  # batched CFG vs single: float rounding
    # `guidance_scale` is min = max
    np.testing.assert_array_equal(run(pipe, reference=VIDEO[0], guidance_scale=3.0),
                                  run(pipe, reference=VIDEO[0], min_guidance_scale=3.0, max_guidance_scale=3.0))
    assert pipe.identity_tokens(FEATURES, "cpu", torch.float32).shape == (1, 1, 32)
    assert pipe.identity_tokens(np.zeros((512, 7, 7), np.float32), "cpu", torch.float32).shape == (1, 49, 32)


def test_every_window_steps_from_the_same_sigma():
    pipe = pipeline()
    scheduler, used = pipe.scheduler, []
    step, scale = scheduler.step, scheduler.scale_model_input

    def record_scale(sample, t):
        out = scale(sample, t)
        used.append(("scale", scheduler.step_index))
        return out

    def record_step(*args, **kwargs):
        out = step(*args, **kwargs)
        used.append(("step", scheduler.step_index - 1))
        return out

    scheduler.scale_model_input, scheduler.step = record_scale, record_step
    latents = []
    run(pipe, num_inference_steps=3, callback_on_step_end=lambda p, i, t, kw: latents.append(kw["latents"].shape) or kw)
    windows = [len(window_starts(5, 3, 1, window_shift(i, 1))) for i in range(3)]
    assert windows == [2, 3, 2] and latents == [(5, 4, 16, 16)] * 3
    calls = [-(-w // DEFAULT_WINDOW_BATCH) for w in windows]  # the windows go through the UNet in batches
    assert used == [(kind, i) for i in range(3) for _ in range(calls[i]) for kind in ("scale", "step")]


def test_self_referred_refinement_uses_a_first_pass_frame():
    pipe = pipeline()
    seen = []
    out = pipe(VIDEO, num_inference_steps=2, window=3, overlap=1, generator=torch.Generator().manual_seed(0),
               identity_fn=lambda ref: seen.append(ref) or FEATURES)
    assert out.reference_index in range(3) and len(seen) == 1 and seen[0].shape == (32, 32, 3)
    first_pass = run(pipe, video=VIDEO[:3])  # same seed: the same first pass
    expected = (first_pass[out.reference_index] * 255).round()
    assert np.abs(seen[0].astype(np.float32) - expected).max() <= 1
    assert np.abs(out.frames - run(pipe)).max() > 1e-4  # the reference and identity were used
    sharp = torch.zeros(3, 3, 16, 16)
    sharp[1, :, ::2] = 1.0
    assert sharpest_frame(sharp) == 1


def test_inpainting_mask_and_output_types():
    pipe = pipeline()
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:20] = 255
    painted = VIDEO.copy()
    painted[:, mask > 0] = 255
    np.testing.assert_allclose(run(pipe, tasks=("bfr", "inpaint"), mask=mask),
                               run(pipe, video=painted, tasks=("bfr", "inpaint")), atol=1e-4)
    pil = run(pipe, output_type="pil")
    assert len(pil) == 5 and pil[0].size == (32, 32)
    assert tuple(run(pipe, output_type="pt").shape) == (5, 3, 32, 32)
    assert tuple(run(pipe, output_type="latent").shape) == (5, 4, 16, 16)
    small = run(pipe, reference=VIDEO[0, ::2, ::2].copy())  # references are resized to the frames
    assert small.shape == (5, 32, 32, 3)


def test_save_and_reload_give_the_same_frames(tmp_path):
    pipe = pipeline()
    expected = run(pipe, identity_features=FEATURES, reference=VIDEO[1])
    pipe.save_pretrained(tmp_path)
    reloaded = SVFRPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert reloaded.unet.config.in_channels == 12
    np.testing.assert_array_equal(run(reloaded, identity_features=FEATURES, reference=VIDEO[1]), expected)


def test_bad_inputs():
    pipe = pipeline()
    with pytest.raises(IdgenError, match="tasks"):
        run(pipe, tasks=("deblur",))
    with pytest.raises(IdgenError, match=r"\[T, H, W, 3\]"):
        pipe(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(IdgenError, match=r"\[T, H, W, 3\]"):
        pipe(np.zeros((2, 32, 32, 4), np.uint8))
    with pytest.raises(IdgenError, match="T >= 1"):
        pipe(np.zeros((0, 32, 32, 3), np.uint8))
    with pytest.raises(IdgenError, match="T >= 1"):
        pipe([])
    with pytest.raises(IdgenError, match="T >= 1"):
        pipe(torch.zeros(2, 4, 32, 32))
    with pytest.raises(IdgenError, match="multiple of"):
        pipe(np.zeros((2, 31, 31, 3), np.uint8))
    with pytest.raises(IdgenError, match="identity features"):
        run(pipe, identity_features=np.zeros(128, np.float32))
    with pytest.raises(IdgenError, match="one face"):
        run(pipe, identity_features=np.zeros((2, 512), np.float32))
    with pytest.raises(IdgenError, match="inpainting task"):
        run(pipe, mask=np.zeros((32, 32)))
    with pytest.raises(IdgenError, match="mask is"):
        run(pipe, tasks=("inpaint",), mask=np.zeros((16, 16)))
    with pytest.raises(IdgenError, match="output_type"):
        run(pipe, output_type="video")
    with pytest.raises(IdgenError, match="strength"):
        run(pipe, strength=0.1)
    parts = tiny_svd_components(0)
    with pytest.raises(IdgenError, match="widen_conv_in"):
        SVFRPipeline(vae=parts["vae"], unet=parts["unet"], scheduler=parts["scheduler"])
    no_projection = SVFRPipeline(vae=pipe.vae, unet=pipe.unet, scheduler=pipe.scheduler)
    with pytest.raises(IdgenError, match="id_projection"):
        run(no_projection, identity_features=FEATURES)


def test_released_weights_load_checked_and_give_the_same_frames(tmp_path):
    pipe = pipeline()
    expected = run(pipe, identity_features=FEATURES, reference=VIDEO[1])
    torch.save(official_state_dict(pipe.id_projection), tmp_path / "id_linear.pth")
    torch.save(pipe.unet.state_dict(), tmp_path / "unet.pth")
    parts = tiny_svd_components(0)
    unet = load_svfr_unet(parts["unet"].eval(), tmp_path / "unet.pth")
    projection = load_id_projection(tmp_path / "id_linear.pth", SVFRConfig.for_unet(unet))
    assert unet.config.in_channels == 12 and not projection.training
    loaded = SVFRPipeline(vae=pipe.vae, unet=unet, scheduler=pipe.scheduler, id_projection=projection)
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(run(loaded, identity_features=FEATURES, reference=VIDEO[1]), expected)

    good = official_state_dict(pipe.id_projection)
    with pytest.raises(CheckpointError, match="missing key 'final_norm.bias'"):
        load_id_projection({k: v for k, v in good.items() if k != "final_norm.bias"}, SVFRConfig.for_unet(unet))
    with pytest.raises(CheckpointError, match="project1024.weight"):
        load_id_projection(good, SVFRConfig(cross_attention_dim=64))
    with pytest.raises(CheckpointError, match="SVFR UNet"):
        load_svfr_unet(tiny_svd_components(0)["unet"], {"conv_in.weight": torch.zeros(1)})


def test_training_starts_from_the_widened_svd_unet():
    unet = tiny_svd_components(0)["unet"]
    projection = init_svfr(unet)
    assert unet.config.in_channels == 12 and unet.conv_in.weight[:, 8:].abs().max() == 0
    assert projection(torch.zeros(1, 512)).shape == (1, 1, 32)
