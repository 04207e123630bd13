"""Image face restoration: FaceRestorePipeline (tiny models), whole photos, identity, training."""

import functools

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from idgen.errors import FaceNotFoundError, IdgenError
from idgen.face import get_face_analyzer
from idgen.image_io import load_image
from idgen.pipelines.pipeline_face_restore import FaceRestorePipeline, fidelity_to_scales
from idgen.testing import random_faceid_state_dict, seeded, tiny_controlnet, tiny_sd15_components
from idgen.train.loop import TrainingArgs, run_training, step_generator
from idgen.train.restore import RestoreOptions, RestoreTask

from conftest import SHARED
from pipeline_checks import PipelineChecks

DEGRADED = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)


def components(controlnet_seed=5):
    parts = {k: (v.eval() if isinstance(v, torch.nn.Module) else v) for k, v in tiny_sd15_components(0).items()}
    parts["controlnet"] = tiny_controlnet(parts["unet"], controlnet_seed).eval()
    return parts


def pipeline(controlnet_seed=5):
    pipe = FaceRestorePipeline(**components(controlnet_seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, **kw):
    return pipe(image=DEGRADED, num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(0),
                **kw).images


@functools.lru_cache(maxsize=None)
def analyzer():
    return get_face_analyzer("dlib")


class TestFaceRestorePipeline(PipelineChecks):
    def get_pipeline(self):
        return pipeline()

    def get_inputs(self, seed: int = 0) -> dict:
        return dict(image=DEGRADED, prompt="a photo of a face", negative_prompt="blurry", num_inference_steps=2,
                    output_type="np",
                    generator=torch.Generator().manual_seed(seed))


def test_fidelity_knob_mapping_and_overrides():
    assert fidelity_to_scales(0.0) == (0.5, 1.0) and fidelity_to_scales(1.0) == (1.0, 0.5)
    with pytest.raises(IdgenError, match=r"\[0, 1\]"):
        fidelity_to_scales(1.5)
    pipe = pipeline()
    assert np.abs(run(pipe, fidelity=0.0) - run(pipe, fidelity=1.0)).max() > 1e-3
    np.testing.assert_array_equal(run(pipe, fidelity=0.0, controlnet_conditioning_scale=1.0, strength=0.5),
                                  run(pipe, fidelity=1.0))


def test_the_degraded_crop_conditions_through_the_controlnet():
    a, b = pipeline(5), pipeline(6)  # two restoration ControlNets
    assert np.abs(run(a) - run(b)).max() > 1e-3
    np.testing.assert_array_equal(run(a, controlnet_conditioning_scale=0.0), run(b, controlnet_conditioning_scale=0.0))


def test_reference_identity_changes_the_restoration():
    pipe = pipeline()
    pipe.load_faceid(random_faceid_state_dict(pipe.unet, "faceid", seed=6), variant="faceid")
    face_a, face_b = (np.random.default_rng(s).normal(size=(1, 512)).astype(np.float32) for s in (1, 2))
    a, b = run(pipe, face_embeds=face_a), run(pipe, face_embeds=face_b)
    assert np.abs(a - b).max() > 1e-3
    assert np.abs(run(pipe, face_embeds=face_a, identity_scale=0.3) - a).max() > 1e-4
    with pytest.raises(IdgenError, match="give exactly one"):  # the adapter is loaded: the person is needed
        run(pipe)


def test_from_pipe_and_components_reuse():
    from diffusers import StableDiffusionPipeline

    parts = components()
    controlnet = parts.pop("controlnet")
    plain = StableDiffusionPipeline(**parts, requires_safety_checker=False)
    pipe = FaceRestorePipeline.from_pipe(plain, controlnet=controlnet)
    assert type(pipe) is FaceRestorePipeline and pipe.unet is plain.unet and pipe.controlnet is controlnet
    pipe.set_progress_bar_config(disable=True)
    reference = run(pipeline())
    np.testing.assert_array_equal(run(pipe), reference)
    rebuilt = FaceRestorePipeline(**pipe.components)
    rebuilt.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(run(rebuilt), reference)


def test_whole_photos_with_several_faces():
    pipe = pipeline()
    two = np.concatenate([cv2.resize(load_image(SHARED / "faces" / n), (300, 300)) for n in
                          ("portrait_glasses.jpg", "portrait_smile.jpg")], axis=1)
    result = pipe.restore_faces(two, analyzer=analyzer(), num_inference_steps=2)
    assert [f.get("restored") for f in result.faces] == [True, True]
    changed = np.any(result.image != two, axis=-1)
    assert changed[:, :300].any() and changed[:, 300:].any()
    small = pipe.restore_faces(two, analyzer=analyzer(), min_face_size=10_000, num_inference_steps=2)
    np.testing.assert_array_equal(small.image, two)
    assert all("left as is" in f["note"] for f in small.faces)
    with pytest.raises(FaceNotFoundError):
        pipe.restore_faces(np.full((96, 96, 3), 120, np.uint8), analyzer=analyzer())
    with pytest.raises(IdgenError, match="degraded face"):
        pipe()


def clean_faces(tmp_path, n=4):
    folder = tmp_path / "faces"
    folder.mkdir()
    photo = load_image(SHARED / "faces" / "portrait_glasses.jpg")
    for i in range(n):
        Image.fromarray(cv2.resize(np.roll(photo, 9 * i, axis=1), (32, 32), interpolation=cv2.INTER_AREA)).save(folder / f"{i}.png")
    return folder


def test_training_lowers_the_loss_and_the_controlnet_reloads(tmp_path):
    from diffusers import ControlNetModel

    options = RestoreOptions(base="tiny-sd15", data=str(clean_faces(tmp_path)), resolution=32, preset="codeformer-light",
                             validation_inference_steps=2)
    args = TrainingArgs(output_dir=str(tmp_path / "run"), max_train_steps=40, learning_rate=1e-3, train_batch_size=4,
                        progress=False)
    task = RestoreTask(options, args)

    def fixed_loss():
        with torch.no_grad():
            batch = task.collate([task.dataset()[i] for i in range(4)])
            return float(np.mean([task.loss(batch, step_generator(7, k, 0), task.trainable_modules()).item() for k in range(6)]))

    summary = run_training(task, args)
    after = fixed_loss()
    with seeded(0):
        fresh = RestoreTask(options, TrainingArgs(output_dir=str(tmp_path / "fresh"), max_train_steps=1, progress=False))
        from accelerate import Accelerator

        fresh.setup(Accelerator(cpu=True), torch.float32)
    with torch.no_grad():
        batch = fresh.collate([fresh.dataset()[i] for i in range(4)])
        before = float(np.mean([fresh.loss(batch, step_generator(7, k, 0), fresh.trainable_modules()).item() for k in range(6)]))
    assert after < 0.97 * before, (before, after)
    assert summary.weights[0].endswith("controlnet")
    parts = {k: (v.eval() if isinstance(v, torch.nn.Module) else v) for k, v in fresh.pipe.components.items()
             if k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    reloaded = FaceRestorePipeline(**parts, controlnet=ControlNetModel.from_pretrained(tmp_path / "run" / "controlnet"))
    task.pipe.controlnet.eval()
    kw = dict(image=DEGRADED[:32, :32], height=32, width=32, num_inference_steps=2, output_type="np")
    np.testing.assert_allclose(reloaded(**kw, generator=torch.Generator().manual_seed(0)).images,
                               task.pipe(**kw, generator=torch.Generator().manual_seed(0)).images, atol=1e-5)


def test_bad_training_options():
    with pytest.raises(IdgenError, match="--preset"):
        RestoreOptions(base="tiny-sd15", data="x", preset="bsrgan")
    with pytest.raises(IdgenError, match="--tasks"):
        RestoreOptions(base="tiny-sd15", data="x", tasks="bfr,deblur")
