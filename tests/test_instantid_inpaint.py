"""InstantID and FaceID identity inpainting (tiny models, CPU)."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLControlNetInpaintPipeline
from PIL import Image

from idgen.conditioning import draw_kps
from idgen.errors import FaceNotFoundError, IdgenError
from idgen.face.types import Face
from idgen.pipelines import (
    StableDiffusionFaceIDInpaintPipeline,
    StableDiffusionXLFaceIDInpaintPipeline,
    StableDiffusionInstantIDInpaintPipeline,
    StableDiffusionXLInstantIDInpaintPipeline,
)
from idgen.testing import (
    TINY_RESAMPLER,
    random_faceid_state_dict,
    random_instantid_state_dict,
    tiny_controlnet,
    tiny_sd15_components,
    tiny_sdxl_components,
)

from pipeline_checks import PipelineChecks

FACE_A = np.random.default_rng(1).normal(0, 20, (1, 512)).astype(np.float32)
FACE_B = np.random.default_rng(2).normal(0, 20, (1, 512)).astype(np.float32)
KPS = np.array([[24, 28], [40, 28], [32, 36], [26, 44], [38, 44]], dtype=np.float32)


def _eval(components):
    return {k: v.eval() if isinstance(v, torch.nn.Module) else v for k, v in components.items()}


def _photo_and_mask():
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = np.zeros((64, 64), np.uint8)
    mask[16:52, 16:48] = 255
    return photo, Image.fromarray(mask)


def sdxl_components():
    components = _eval(tiny_sdxl_components(0, in_channels=9))
    components["controlnet"] = tiny_controlnet(components["unet"], 5).eval()
    return components


def sdxl_pipeline():
    pipe = StableDiffusionXLInstantIDInpaintPipeline(**sdxl_components())
    pipe.load_instantid(random_instantid_state_dict(pipe.unet, seed=6), resampler_config=TINY_RESAMPLER)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def inputs(**overrides):
    photo, mask = _photo_and_mask()
    base = dict(prompt="photo of a person", image=photo, mask_image=mask, face_embeds=FACE_A, target_kps=KPS,
                num_inference_steps=2, output_type="np", generator=torch.Generator("cpu").manual_seed(0))
    return base | overrides


def test_scales_zero_equal_diffusers_controlnet_inpainting():
    pipe = sdxl_pipeline()
    ours = pipe(**inputs(identity_scale=0.0, controlnet_conditioning_scale=0.0)).images
    base = StableDiffusionXLControlNetInpaintPipeline(**sdxl_components())
    base.set_progress_bar_config(disable=True)
    args = inputs(controlnet_conditioning_scale=0.0, guidance_scale=5.0, control_image=draw_kps((64, 64), KPS))
    for key in ("face_embeds", "target_kps"):
        args.pop(key)
    np.testing.assert_array_equal(ours, base(**args).images)


def test_identity_changes_the_output_through_both_paths():
    pipe = sdxl_pipeline()
    a, b = (pipe(**inputs(face_embeds=f)).images for f in (FACE_A, FACE_B))
    assert np.abs(a - b).max() > 1e-3
    # identity attention off: the face still reaches the output through the IdentityNet context
    a0, b0 = (pipe(**inputs(face_embeds=f, identity_scale=0.0)).images for f in (FACE_A, FACE_B))
    assert np.abs(a0 - b0).max() > 1e-4
    # the hooks and the identity processors are gone after the call
    assert not pipe.controlnet._forward_pre_hooks and not pipe.unet._forward_pre_hooks
    assert not any(type(p).__name__ == "InstantIDAttnProcessor" for p in pipe.unet.attn_processors.values())


def test_identity_window_and_old_names():
    pipe = sdxl_pipeline()
    off = pipe(**inputs(identity_scale=0.0)).images
    np.testing.assert_array_equal(pipe(**inputs(identity_start=0.0, identity_end=0.0)).images, off)
    with pytest.warns(FutureWarning, match="ip_adapter_scale"):
        np.testing.assert_array_equal(pipe(**inputs(ip_adapter_scale=0.0)).images, off)


class _Analyzer:
    name, embedding_model, embedding_dim = "fake", "fake", 512

    def __init__(self, faces):
        self.faces = faces

    def get(self, image, select="largest"):
        return list(self.faces)


def _face(box, kps):
    return Face(bbox=np.array(box, np.float32), kps=np.asarray(kps, np.float32), score=0.9, image_size=(64, 64))


def test_identitynet_sees_the_keypoints_of_the_masked_face():
    pipe = sdxl_pipeline()
    photo, mask = _photo_and_mask()
    other = KPS + np.array([-20, -20], np.float32)
    pipe.face_analyzer = _Analyzer([_face([0, 0, 12, 12], other), _face([18, 20, 46, 50], KPS)])
    control = pipe.control_image_for(np.asarray(photo), mask, None)
    np.testing.assert_array_equal(np.asarray(control), np.asarray(draw_kps((64, 64), KPS)))
    detected = pipe(**inputs(target_kps=None)).images
    np.testing.assert_array_equal(detected, pipe(**inputs()).images)
    pipe.face_analyzer = _Analyzer([_face([0, 0, 12, 12], other)])
    with pytest.raises(FaceNotFoundError, match="overlaps the mask"):
        pipe(**inputs(target_kps=None))


def test_bad_inputs():
    pipe = sdxl_pipeline()
    with pytest.raises(IdgenError, match=r"\[5, 2\]"):
        pipe(**inputs(target_kps=np.zeros((4, 2))))
    with pytest.raises(IdgenError, match="mask_image"):
        pipe(**inputs(mask_image=None))
    with pytest.raises(IdgenError, match="not both"):
        pipe(**inputs(control_image=draw_kps((64, 64), KPS)))
    assert not pipe.controlnet._forward_pre_hooks


def sd15_pipeline():
    components = _eval(tiny_sd15_components(0, in_channels=9))
    components["controlnet"] = tiny_controlnet(components["unet"], 5).eval()
    pipe = StableDiffusionInstantIDInpaintPipeline(**components)
    pipe.load_instantid(random_instantid_state_dict(pipe.unet, seed=6), resampler_config={**TINY_RESAMPLER, "output_dim": 32})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def faceid_pipeline(xl: bool = False):
    cls, build = ((StableDiffusionXLFaceIDInpaintPipeline, tiny_sdxl_components) if xl else
                  (StableDiffusionFaceIDInpaintPipeline, tiny_sd15_components))
    pipe = cls(**_eval(build(0, in_channels=9)))
    pipe.load_faceid(random_faceid_state_dict(pipe.unet, "faceid", seed=6), variant="faceid")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sd15_instantid_and_faceid_inpainting():
    pipe = sd15_pipeline()
    a, b = (pipe(**inputs(face_embeds=f)).images for f in (FACE_A, FACE_B))
    assert a.shape == (1, 64, 64, 3) and np.abs(a - b).max() > 1e-3

    faceid = faceid_pipeline()
    photo, mask = _photo_and_mask()
    args = dict(prompt="photo of a person", image=photo, mask_image=mask, num_inference_steps=2, output_type="np")
    a, b = (faceid(**args, face_embeds=f, generator=torch.Generator("cpu").manual_seed(0)).images for f in (FACE_A, FACE_B))
    assert a.shape == (1, 64, 64, 3) and np.abs(a - b).max() > 1e-3


# -- the shared pipeline checks on every identity-inpainting pipeline ------------------------------


class TestInstantIDInpaintXLChecks(PipelineChecks):
    def get_pipeline(self):
        return sdxl_pipeline()

    def get_inputs(self, seed: int = 0) -> dict:
        return inputs(generator=torch.Generator("cpu").manual_seed(seed))


class TestInstantIDInpaintChecks(TestInstantIDInpaintXLChecks):
    def get_pipeline(self):
        return sd15_pipeline()


class TestFaceIDInpaintChecks(PipelineChecks):
    xl = False

    def get_pipeline(self):
        return faceid_pipeline(self.xl)

    def get_inputs(self, seed: int = 0) -> dict:
        photo, mask = _photo_and_mask()
        return dict(prompt="photo of a person", image=photo, mask_image=mask, face_embeds=FACE_A, num_inference_steps=2,
                    height=64, width=64, output_type="np", generator=torch.Generator("cpu").manual_seed(seed))


class TestFaceIDInpaintXLChecks(TestFaceIDInpaintChecks):
    xl = True
