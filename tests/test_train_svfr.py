"""`idgen train svfr` on tiny models: the loss falls on fixed draws and the weights load into
SVFRPipeline; identity training; the landmark prior; the pairs and the ULR term; bad options."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from idgen.adapters.svfr import IDProjection, widen_conv_in
from idgen.errors import DatasetError, FaceNotFoundError, IdgenError
from idgen.pipelines import SVFRPipeline
from idgen.testing import tiny_svd_components
from idgen.train.loop import TrainingArgs, run_training, step_generator
from idgen.train.svfr import SVFROptions, SVFRTask, unified_latent_loss
from idgen.media.video import write_video

FACES = Path(__file__).resolve().parents[1] / "assets" / "faces"


def clip_folder(root, videos=2, frames=6, size=32):
    """Videos of a random texture drifting one pixel per frame."""
    root.mkdir()
    rng = np.random.default_rng(0)
    for v in range(videos):
        base = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        write_video(root / f"{v}.mp4", [np.roll(base, i, axis=1) for i in range(frames)], 10, crf=0)
    return root


def fixed_loss(task, draws=4):
    """The mean loss over every clip with the same `draws` generators (weights are the only change)."""
    batch = task.collate([task.dataset()[i] for i in range(len(task.dataset()))])
    with torch.no_grad():
        return float(np.mean([task.loss(batch, step_generator(5, k, 0), task.trainable_modules()).item()
                              for k in range(draws)]))


def restore(unet, projection=None, **kw):
    parts = tiny_svd_components(0)
    pipe = SVFRPipeline(vae=parts["vae"].eval(), unet=unet.eval(), scheduler=parts["scheduler"], id_projection=projection)
    pipe.set_progress_bar_config(disable=True)
    video = (np.random.default_rng(1).random((3, 32, 32, 3)) * 255).astype(np.uint8)
    return pipe(video, num_inference_steps=2, self_refine=False, reference=video[0],
                generator=torch.Generator().manual_seed(0), **kw).frames


def test_training_lowers_the_loss_and_its_weights_load_into_the_pipeline(tmp_path):
    from accelerate import Accelerator
    from diffusers import UNetSpatioTemporalConditionModel

    videos = clip_folder(tmp_path / "videos")
    options = SVFROptions(base="tiny-svd", data=str(videos), num_frames=3, resolution=32, task_prob=0.5,
                          ulr_weight=0.1)
    args = TrainingArgs(output_dir=str(tmp_path / "run"), max_train_steps=12, learning_rate=3e-4, train_batch_size=2,
                        progress=False)
    fresh = SVFRTask(options, TrainingArgs(output_dir=str(tmp_path / "fresh"), progress=False))
    fresh.setup(Accelerator(cpu=True), torch.float32)
    assert len(fresh.dataset()) == 4  # 2 videos x 6 frames, 3-frame clips
    task = SVFRTask(options, args)
    summary = run_training(task, args)
    assert len(summary.losses) == 12 and all(np.isfinite(summary.losses))
    assert fixed_loss(task) < 0.9 * fixed_loss(fresh)
    assert not (tmp_path / "run" / "id_projection").exists()  # identity not trained: nothing to ship
    unet = UNetSpatioTemporalConditionModel.from_pretrained(tmp_path / "run" / "unet")
    assert unet.config.in_channels == 12
    trained = restore(unet)
    assert trained.shape == (3, 32, 32, 3) and np.isfinite(trained).all()
    assert np.abs(trained - restore(widen_conv_in(tiny_svd_components(0)["unet"]))).max() > 1e-3


class StubArcFace:
    """An insightface stand-in: a 512-d embedding that depends on the image; no face in dark images."""

    embedding_dim = 512

    def __init__(self):
        self.projection = np.random.default_rng(2).normal(size=(3, 512)).astype(np.float32)

    def get(self, image):
        if image.mean() < 20:
            raise FaceNotFoundError("no face")
        return SimpleNamespace(embedding=image.reshape(-1, 3).mean(0) @ self.projection)


def test_identity_training_updates_and_ships_the_projection(tmp_path, monkeypatch):
    import idgen.train.svfr

    monkeypatch.setattr(idgen.train.svfr, "get_face_analyzer", lambda name: StubArcFace())
    videos = clip_folder(tmp_path / "videos", videos=1)
    options = SVFROptions(base="tiny-svd", data=str(videos), num_frames=3, resolution=32,
                          identity_backend="insightface", reference_dropout=0.0, identity_dropout=0.0)
    args = TrainingArgs(output_dir=str(tmp_path / "run"), max_train_steps=3, learning_rate=1e-3, progress=False)
    task = SVFRTask(options, args)
    after_first = []
    summary = run_training(task, args, on_step=lambda step, loss: after_first.append(
        task.id_projection.project1024.weight.detach().clone()) if step == 1 else None)
    assert any(w.endswith("id_projection") for w in summary.weights)
    projection = IDProjection.from_pretrained(tmp_path / "run" / "id_projection")
    assert (projection.project1024.weight - after_first[0]).abs().max() > 1e-5  # trained on
    clip = task.dataset()[0]["frames"]
    embedding = task.identity_embedding(0, clip, 1)
    assert embedding.shape == (512,) and task.identity_embedding(99, np.zeros_like(clip), 0) is None
    unet = widen_conv_in(tiny_svd_components(0)["unet"])
    unet.load_state_dict(task.unet.state_dict())
    with_id = restore(unet, projection.eval(), identity_features=embedding)
    assert np.abs(with_id - restore(unet, projection)).max() > 1e-4

    class Dlib128(StubArcFace):
        embedding_dim = 128

    monkeypatch.setattr(idgen.train.svfr, "get_face_analyzer", lambda name: Dlib128())
    with pytest.raises(IdgenError, match="512-d"):
        SVFRTask(options, args).setup(SimpleNamespace(device=torch.device("cpu")), torch.float32)


def test_landmark_prior_trains_a_head_on_the_clean_frames_landmarks(tmp_path):
    import cv2

    from idgen.image_io import load_image

    portrait = cv2.resize(load_image(FACES / "portrait_glasses.jpg"), (256, 256))
    faces = tmp_path / "faces"
    faces.mkdir()
    write_video(faces / "f.mp4", [np.roll(portrait, 2 * i, axis=1) for i in range(3)], 10, crf=0)
    options = SVFROptions(base="tiny-svd", data=str(faces), num_frames=3, resolution=64, landmark_weight=1.0)
    args = TrainingArgs(output_dir=str(tmp_path / "run"), max_train_steps=2, learning_rate=1e-3, progress=False)
    task = SVFRTask(options, args)
    summary = run_training(task, args)
    assert any(w.endswith("landmark_head.safetensors") for w in summary.weights)
    targets, found = task.landmarks(0, task.dataset()[0]["frames"])
    assert found.all() and targets.shape == (3, 136) and 0 < float(targets.min()) and float(targets.max()) < 1
    # the prior adds to the loss: the same draws without it give less
    with_prior = fixed_loss(task, draws=1)
    task.opts.landmark_weight = 0.0
    assert fixed_loss(task, draws=1) < with_prior


def test_pairs_share_the_blind_degradation_and_paint_the_inpainting_region_white(tmp_path):
    from idgen.media.degrade import degrade, grayscale

    task = SVFRTask(SVFROptions(base="tiny-svd", data=str(tmp_path), num_frames=3, resolution=32), None)
    clip = (np.random.default_rng(3).random((3, 32, 32, 3)) * 255).astype(np.uint8)
    bfr = task.degraded(clip, ("bfr",), 7)
    np.testing.assert_array_equal(task.degraded(clip, ("bfr", "colorize"), 7), np.stack([grayscale(f) for f in bfr]))
    inpainted = task.degraded(clip, ("bfr", "inpaint"), 7)
    mask = degrade(clip, "gfpgan", seed=7, tasks=("bfr", "inpaint")).mask > 0.5
    assert mask.any() and (inpainted[:, mask] == 255).all()
    np.testing.assert_array_equal(inpainted[:, ~mask], bfr[:, ~mask])
    draws = [task.draw(3, torch.Generator().manual_seed(s)) for s in range(60)]
    assert {d.tasks for d in draws} == {("bfr",), ("bfr", "colorize"), ("bfr", "inpaint"), ("bfr", "colorize", "inpaint")}
    assert all(d.other_tasks != d.tasks and "bfr" in d.other_tasks for d in draws)
    assert {d.reference for d in draws} == {0, 1, 2}
    assert task.draw(3, torch.Generator().manual_seed(4)) == task.draw(3, torch.Generator().manual_seed(4))


def test_unified_latent_loss_pulls_a_clips_task_runs_together():
    a = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(0))
    b = a + 0.01 * torch.randn(4, 3, 5)
    assert unified_latent_loss(a, b, 0.1) < unified_latent_loss(a, b[[1, 2, 3, 0]], 0.1)
    assert float(unified_latent_loss(a[:1], a[:1], 0.1)) == pytest.approx(0.0, abs=1e-6)
    assert float(unified_latent_loss(a[:1], -a[:1], 0.1)) == pytest.approx(2.0, abs=1e-6)


def test_bad_options_and_data(tmp_path):
    from accelerate import Accelerator

    base = dict(base="tiny-svd", data=str(tmp_path / "none"), num_frames=3, resolution=32)
    with pytest.raises(IdgenError, match="preset"):
        SVFROptions(**{**base, "preset": "heavy"})
    with pytest.raises(IdgenError, match="probability"):
        SVFROptions(**{**base, "task_prob": 1.5})
    with pytest.raises(IdgenError, match="identity-backend"):
        SVFROptions(**{**base, "identity_backend": "dlib"})
    with pytest.raises(IdgenError, match="multiple of 8"):
        SVFROptions(**{**base, "resolution": 30})
    args = TrainingArgs(output_dir=str(tmp_path / "run"), progress=False)
    with pytest.raises(IdgenError, match="snr-gamma"):
        SVFRTask(SVFROptions(**base), TrainingArgs(output_dir=str(tmp_path), snr_gamma=5.0)).setup(None, torch.float32)
    with pytest.raises(DatasetError, match="no videos"):
        SVFRTask(SVFROptions(**base), args).setup(Accelerator(cpu=True), torch.float32)
    short = clip_folder(tmp_path / "short", videos=1, frames=2)
    with pytest.raises(DatasetError, match="shorter than 3"):
        SVFRTask(SVFROptions(**{**base, "data": str(short)}), args).setup(Accelerator(cpu=True), torch.float32)
    with pytest.raises(IdgenError, match="not an SVD/SVFR folder"):
        SVFRTask(SVFROptions(**{**base, "data": str(short), "num_frames": 2, "base": str(tmp_path)}), args).setup(
            Accelerator(cpu=True), torch.float32)
