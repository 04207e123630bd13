"""The tiny-model kit: deterministic per seed, every pipeline kind runs, tokenizer works offline."""

import numpy as np
import pytest
import torch
from PIL import Image

from idgen.testing import PIPELINE_KINDS, tiny_clip_tokenizer, tiny_pipeline, tiny_sd15_components, tiny_sdxl_components, tiny_unet


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_same_seed_same_weights_different_seed_different_weights():
    a, b, c = _state(tiny_unet(3)), _state(tiny_unet(3)), _state(tiny_unet(4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_building_does_not_disturb_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_sdxl_components(0)
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


def test_tokenizer_has_identity_prompt_words_and_round_trips(tmp_path):
    tok = tiny_clip_tokenizer()
    assert tok.tokenize("photo of a id person") == ["photo</w>", "of</w>", "a</w>", "id</w>", "person</w>"]
    ids = tok("a photo of sks man").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "a photo of sks man"
    tok.save_pretrained(tmp_path)
    assert type(tok).from_pretrained(tmp_path)("photo of a id person").input_ids == tok("photo of a id person").input_ids


@pytest.mark.parametrize("kind", PIPELINE_KINDS)
def test_every_kind_runs_two_steps(kind):
    pipe = tiny_pipeline(kind, seed=0)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(0)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    if kind == "svd":
        frames = pipe(image=image, num_inference_steps=2, generator=generator, output_type="np", height=64, width=64,
                      num_frames=2, decode_chunk_size=2).frames
        assert np.asarray(frames).shape == (1, 2, 64, 64, 3)
        return
    kwargs = dict(prompt="photo of a person", num_inference_steps=2, generator=generator, output_type="np", height=64, width=64)
    if kind.endswith("inpaint"):
        kwargs.update(image=image, mask_image=Image.new("L", (64, 64), 255))
    if kind.endswith("controlnet"):
        kwargs.update(image=image)
    images = pipe(**kwargs).images
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()


def test_controlnet_output_convs_are_not_zero():
    pipe = tiny_pipeline("sd15-controlnet")
    assert any(block.weight.abs().sum() > 0 for block in pipe.controlnet.controlnet_down_blocks)


def test_image_encoder_option():
    components = tiny_sd15_components(0, with_image_encoder=True)
    assert components["image_encoder"] is not None and components["feature_extractor"] is not None
