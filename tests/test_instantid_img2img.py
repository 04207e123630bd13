"""InstantID img2img on SDXL (tiny models, CPU): parity with the official
`pipeline_stable_diffusion_xl_instantid_img2img.py` (`tests/data/parity/instantid-img2img/`, made
by `bench/parity/instantid_img2img.py`), `strength`, the output size, drawn keypoints, extra
ControlNets."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from idgen.conditioning import draw_kps
from idgen.errors import IdgenError
from idgen.face.types import Face
from idgen.pipelines import StableDiffusionXLInstantIDImg2ImgPipeline
from idgen.testing import TINY_RESAMPLER

from test_instantid_controlnets import CASE as FULL_CASE, DEPTH, FACE, KPS, KPS_IMAGE, parity_kit

CASE_DIR = Path(__file__).parent / "data" / "parity" / "instantid-img2img"
CASE = json.loads((CASE_DIR / "case.json").read_text())
INIT = Image.open(CASE_DIR / "init.png").convert("RGB")


def make_pipeline(extra=False):
    parts, nets, adapter = parity_kit(CASE["seeds"])
    pipe = StableDiffusionXLInstantIDImg2ImgPipeline(**parts, controlnet=nets if extra else nets[0])
    pipe.load_instantid(adapter, resampler_config=TINY_RESAMPLER)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, **overrides):
    args = dict(prompt="photo of a person", image=INIT, control_image=KPS_IMAGE, face_embeds=FACE, strength=0.6,
                num_inference_steps=4, identity_scale=0.6, generator=torch.Generator("cpu").manual_seed(0),
                output_type="np")
    return pipe(**{**args, **overrides}).images


def test_parity_with_official_img2img():
    assert CASE["seeds"] == FULL_CASE["seeds"]
    pipe = make_pipeline()
    call = dict(CASE["call"])
    seed = call.pop("seed")
    call["identity_scale"] = call.pop("ip_adapter_scale")  # case.json keeps the official name
    out = pipe(**call, image=INIT, control_image=KPS_IMAGE, face_embeds=FACE,
               generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
    expected = np.load(CASE_DIR / "expected.npy")
    assert out.shape == expected.shape == (1, 64, 64, 3)
    diff = float(np.abs(out - expected).max())
    print(f"InstantID img2img parity max abs diff: {diff:.3e}")
    assert diff <= 1e-4


def test_strength_and_output_size():
    pipe = make_pipeline()
    weak, strong = run(pipe, strength=0.3), run(pipe, strength=0.9)
    assert np.abs(weak - strong).max() > 1e-3
    init = np.asarray(INIT, np.float32) / 255
    assert np.abs(weak[0] - init).mean() < np.abs(strong[0] - init).mean()  # less re-noised: nearer the init image
    wide = INIT.resize((80, 64))
    out = run(pipe, image=wide, control_image=None, target_kps=KPS + [8, 0], strength=0.5)
    assert out.shape == (1, 64, 80, 3)


class _Analyzer:
    name, embedding_model, embedding_dim = "fake", "fake", 512

    def get(self, image, select="largest"):
        h, w = image.shape[:2]
        return Face(bbox=np.array([8, 8, 56, 56], np.float32), kps=KPS, score=0.9, image_size=(w, h))


def test_keypoints_are_drawn_from_target_kps_or_the_init_image_face():
    pipe = make_pipeline()
    given = run(pipe)
    np.testing.assert_array_equal(run(pipe, control_image=None, target_kps=KPS), given)
    pipe.face_analyzer = _Analyzer()
    np.testing.assert_array_equal(run(pipe, control_image=None), given)
    assert np.array_equal(np.asarray(pipe.init_image_keypoints(np.asarray(INIT), None)),
                          np.asarray(draw_kps((64, 64), KPS)))


def test_extra_controlnet_in_img2img():
    alone = run(make_pipeline(), controlnet_conditioning_scale=0.8)
    pipe = make_pipeline(extra=True)
    np.testing.assert_array_equal(run(pipe, control_image=[KPS_IMAGE, DEPTH], controlnet_conditioning_scale=[0.8, 0.0]),
                                  alone)
    assert np.abs(run(pipe, control_image=[None, DEPTH], target_kps=KPS) - alone).max() > 1e-3
    with pytest.raises(IdgenError, match=r"`control_image` must be a list of 2"):
        run(pipe)


def test_bad_inputs():
    pipe = make_pipeline()
    with pytest.raises(IdgenError, match="init image"):
        run(pipe, image=None)
    with pytest.raises(IdgenError, match="not both"):
        run(pipe, target_kps=KPS)
    with pytest.raises(IdgenError, match="strength"):
        run(pipe, strength=0.0)
