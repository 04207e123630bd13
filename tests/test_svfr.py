"""SVFR-style video face restoration (tiny SVD models): widened UNet, window schedule, task code,
identity tokens, self-referred refinement, save/load, bad input, and training."""

import numpy as np
import pytest
import torch

from idgen.adapters.svfr import IDProjection, frame_weight_sums, task_vector, widen_conv_in, window_starts
from idgen.errors import DatasetError, IdgenError
from idgen.pipelines.pipeline_svfr import SVFRPipeline, sharpest_frame
from idgen.testing import seeded, tiny_svd_components

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


def run(pipe, **kw):
    kw.setdefault("self_refine", False)
    return pipe(VIDEO, num_inference_steps=2, window=3, overlap=1, generator=torch.Generator().manual_seed(0), **kw).frames


def test_widened_unet_with_zero_new_weights_equals_the_original():
    parts = tiny_svd_components(0)
    original = parts["unet"].eval()
    widened = widen_conv_in(tiny_svd_components(0)["unet"].eval())
    assert widened.config.in_channels == 12 and widened.conv_in.weight[:, 8:].abs().max() == 0
    x = torch.randn(1, 3, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    extra = torch.randn(1, 3, 4, 4, 4)
    context, ids = torch.randn(1, 1, 32), torch.tensor([[1.0, 0.0, 0.0]])
    with torch.no_grad():
        a = original(x, 10, encoder_hidden_states=context, added_time_ids=ids).sample
        b = widened(torch.cat([x, extra], dim=2), 10, encoder_hidden_states=context, added_time_ids=ids).sample
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("frames,window,overlap", [(40, 16, 3), (17, 16, 4), (5, 16, 3), (33, 8, 0), (16, 16, 2)])
def test_windows_cover_every_frame_and_blend_to_total_weight_one(frames, window, overlap):
    for shift in range(0, 7):
        sums = frame_weight_sums(frames, window, overlap, shift)
        assert (sums > 0).all(), "a frame is left out"
        w = min(window, frames)
        weights = np.minimum(np.arange(w) + 1, w - np.arange(w)).astype(np.float32)
        normalised = np.zeros(frames)
        for start in window_starts(frames, window, overlap, shift):
            normalised[start: start + w] += weights / sums[start: start + w]
        np.testing.assert_allclose(normalised, 1.0, atol=1e-6)
    seams = {tuple(window_starts(40, 16, 3, shift)) for shift in range(4)}
    assert len(seams) > 1, "the window grid does not move between steps"
    with pytest.raises(IdgenError, match="overlap"):
        window_starts(10, 4, 4)


def test_task_code_changes_the_output():
    pipe = pipeline()
    assert task_vector(["bfr", "inpaint"]).tolist() == [1.0, 0.0, 1.0]
    bfr, color = run(pipe, tasks=("bfr",)), run(pipe, tasks=("bfr", "colorize"))
    assert bfr.shape == (5, 32, 32, 3) and np.abs(bfr - color).max() > 1e-4


def test_identity_tokens_change_the_output_and_guidance_drops_them():
    pipe = pipeline()
    with_id = run(pipe, identity_features=FEATURES, reference=VIDEO[0])
    without = run(pipe, reference=VIDEO[0])
    assert np.abs(with_id - without).max() > 1e-4
    # guidance 1 uses only the conditional branch; the identity still shows there
    assert np.abs(run(pipe, identity_features=FEATURES, reference=VIDEO[0], min_guidance_scale=1.0, max_guidance_scale=1.0)
                  - run(pipe, reference=VIDEO[0], min_guidance_scale=1.0, max_guidance_scale=1.0)).max() > 1e-4
    tokens = pipe.identity_tokens(FEATURES, "cpu", torch.float32)
    assert tokens.shape == (1, 1, 32)
    assert pipe.identity_tokens(np.zeros((512, 7, 7), np.float32), "cpu", torch.float32).shape == (1, 49, 32)


def test_self_referred_refinement_uses_a_first_pass_frame():
    pipe = pipeline()
    seen = []
    out = pipe(VIDEO, num_inference_steps=2, window=3, overlap=1, generator=torch.Generator().manual_seed(0),
               identity_fn=lambda ref: seen.append(ref.shape) or FEATURES)
    assert out.reference_index in range(3) and seen == [(32, 32, 3)]
    assert np.abs(out.frames - run(pipe)).max() > 1e-4  # the reference and identity were used
    sharp = torch.zeros(3, 3, 16, 16)
    sharp[1, :, ::2] = 1.0
    assert sharpest_frame(sharp) == 1


def test_save_and_reload_give_the_same_frames(tmp_path):
    pipe = pipeline()
    expected = run(pipe)
    pipe.save_pretrained(tmp_path)
    reloaded = SVFRPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(run(reloaded), expected)


def test_bad_inputs():
    pipe = pipeline()
    with pytest.raises(IdgenError, match="tasks"):
        run(pipe, tasks=("deblur",))
    with pytest.raises(IdgenError, match=r"\[T, H, W, 3\]"):
        pipe(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(IdgenError, match="multiple of"):
        pipe(np.zeros((2, 31, 31, 3), np.uint8))
    with pytest.raises(IdgenError, match="identity features"):
        run(pipe, identity_features=np.zeros(128, np.float32))
    with pytest.raises(IdgenError, match="inpainting task"):
        run(pipe, mask=np.zeros((32, 32)))
    parts = tiny_svd_components(0)
    with pytest.raises(IdgenError, match="widen_conv_in"):
        SVFRPipeline(vae=parts["vae"], unet=parts["unet"], scheduler=parts["scheduler"])


def test_training_lowers_the_loss_and_saves_a_loadable_unet(tmp_path):
    from diffusers import UNetSpatioTemporalConditionModel

    from idgen.train.loop import TrainingArgs, run_training, step_generator
    from idgen.train.svfr import SVFROptions, SVFRTask
    from test_video import make_video

    videos = tmp_path / "videos"
    videos.mkdir()
    rng = np.random.default_rng(0)
    base = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    make_video(videos / "a.mp4", [np.roll(base, i, axis=1) for i in range(6)], audio=False)
    options = SVFROptions(base="tiny-svd", data=str(videos), num_frames=3, resolution=32, ulr_weight=0.1)
    args = TrainingArgs(output_dir=str(tmp_path / "run"), max_train_steps=25, learning_rate=2e-4, train_batch_size=1,
                        progress=False)
    task = SVFRTask(options, args)

    def fixed_loss(t):
        batch = t.collate([t.dataset()[i] for i in range(len(t.dataset()))])
        with torch.no_grad():
            return float(np.mean([t.loss(batch, step_generator(5, k, 0), t.trainable_modules()).item() for k in range(6)]))

    from accelerate import Accelerator

    fresh = SVFRTask(options, TrainingArgs(output_dir=str(tmp_path / "fresh"), max_train_steps=1, progress=False))
    fresh.setup(Accelerator(cpu=True), torch.float32)
    before = fixed_loss(fresh)
    summary = run_training(task, args)
    assert fixed_loss(task) < 0.95 * before
    unet = UNetSpatioTemporalConditionModel.from_pretrained(tmp_path / "run" / "unet")
    assert unet.config.in_channels == 12 and len(summary.losses) == 25
    # the landmark prior: a face video, the head learns the landmarks of its frames
    from test_video import face_frames

    faces = tmp_path / "faces"
    faces.mkdir()
    make_video(faces / "f.mp4", [f[:, 16:272] for f in face_frames(3, blank=())], audio=False)
    with_prior = SVFROptions(base="tiny-svd", data=str(faces), num_frames=3, resolution=64, landmark_weight=1.0)
    prior_args = TrainingArgs(output_dir=str(tmp_path / "prior"), max_train_steps=3, learning_rate=1e-3,
                              train_batch_size=1, progress=False)
    prior = SVFRTask(with_prior, prior_args)
    summary = run_training(prior, prior_args)
    assert any(w.endswith("landmark_head.safetensors") for w in summary.weights)
    targets, found = prior.landmarks(prior.dataset()[0]["frames"])
    assert found.all() and targets.shape == (3, 136) and 0 < float(targets.mean()) < 1
    with pytest.raises(DatasetError, match="no videos"):
        SVFRTask(SVFROptions(base="tiny-svd", data=str(tmp_path / "empty"), num_frames=3, resolution=32), args).setup(
            Accelerator(cpu=True), torch.float32)
