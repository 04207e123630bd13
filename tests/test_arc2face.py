"""Arc2Face on tiny models (the parity case's components, text width 544 >= 512): parity with the
official implementation, what the identity encoding does, and the generic pipeline checks."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

from idgen.adapters.arc2face import check_arc2face_folders, encode_identity, id_token_id
from idgen.errors import IdgenError, ModelNotFoundError
from idgen.pipelines import Arc2FacePipeline
from idgen.testing import tiny_clip_tokenizer

from conftest import SHARED
from pipeline_checks import PipelineChecks, parity_parts, parity_sd15_components

CASE_DIR = SHARED / "parity" / "arc2face"
CASE = json.loads((CASE_DIR / "case.json").read_text())["case"] if CASE_DIR.exists() else {}
FACE = np.load(CASE_DIR / "face_embeds.npy") if CASE_DIR.exists() else None
OTHER = np.random.default_rng(5).normal(size=(1, 512)).astype(np.float32)


def components():
    return parity_sd15_components(CASE_DIR)


def make_pipeline(cls=Arc2FacePipeline):
    pipe = cls(**components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def inputs(seed=0, **overrides):
    args = dict(face_embeds=FACE, num_inference_steps=2, guidance_scale=3.0, height=64, width=64,
                generator=torch.Generator("cpu").manual_seed(seed), output_type="np")
    args.update(overrides)
    return args


def test_parity_with_official_arc2face():
    pipe = make_pipeline()
    out = pipe(face_embeds=FACE, num_inference_steps=CASE["num_inference_steps"], guidance_scale=CASE["guidance_scale"],
               height=CASE["height"], width=CASE["width"], generator=torch.Generator("cpu").manual_seed(CASE["seed"]),
               output_type="np").images
    assert np.abs(out - np.load(CASE_DIR / "expected.npy")).max() <= 1e-4


def test_encoding_replaces_only_the_id_position_causally():
    parts = parity_parts(CASE_DIR)
    te, tok = parts["text_encoder"], parts["tokenizer"]
    a = encode_identity(te, tok, torch.nn.functional.normalize(torch.as_tensor(FACE), dim=-1))
    b = encode_identity(te, tok, torch.nn.functional.normalize(torch.as_tensor(OTHER), dim=-1))
    ids = tok("photo of a id person", padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids[0]
    position = int((ids == id_token_id(tok)).nonzero()[0])
    torch.testing.assert_close(a[0, :position], b[0, :position], rtol=0, atol=0)  # causal: earlier tokens unchanged
    assert (a[0, position:] - b[0, position:]).abs().max() > 1e-4
    assert te.get_input_embeddings()._forward_hooks == {}, "the temporary hook is removed"


def test_plain_sd_with_our_prompt_embeds_gives_the_same_image():
    pipe = make_pipeline()
    ours = pipe(**inputs()).images
    plain = make_pipeline(StableDiffusionPipeline)
    embeds = encode_identity(plain.text_encoder, plain.tokenizer, torch.nn.functional.normalize(torch.as_tensor(FACE), dim=-1))
    theirs = plain(prompt_embeds=embeds, num_inference_steps=2, guidance_scale=3.0, height=64, width=64,
                   generator=torch.Generator("cpu").manual_seed(0), output_type="np").images
    np.testing.assert_array_equal(ours, theirs)


def test_identity_changes_the_output_and_references_combine():
    pipe = make_pipeline()
    a = pipe(**inputs()).images
    b = pipe(**inputs(face_embeds=OTHER)).images
    assert np.abs(a - b).max() > 1e-3
    both = np.concatenate([FACE, OTHER])
    normed_mean = pipe(**inputs(face_embeds=both, reference_mode="normed_mean")).images
    # A hand-made average is L2-normalised on input: the same as normed_mean (unit-norm mean).
    manual = pipe(**inputs(face_embeds=(FACE / np.linalg.norm(FACE) + OTHER / np.linalg.norm(OTHER)) / 2)).images
    np.testing.assert_allclose(normed_mean, manual, atol=1e-6)
    mean = pipe(**inputs(face_embeds=both, reference_mode="mean")).images  # shorter vector: a different image
    assert np.abs(mean - normed_mean).max() > 1e-4


def test_bad_inputs_are_clear_errors():
    pipe = make_pipeline()
    with pytest.raises(IdgenError, match="exactly once"):
        pipe(**inputs(prompt="photo of a person"))
    with pytest.raises(IdgenError, match="single identity token"):
        pipe(**inputs(reference_mode="concat"))
    with pytest.raises(IdgenError, match=r"\[512\]"):
        pipe(**inputs(face_embeds=np.zeros((1, 128), np.float32)))
    with pytest.raises(IdgenError, match="exactly one"):
        pipe(**inputs(face_embeds=None))


def test_tokenizer_must_have_id_as_one_token():
    from transformers import CLIPTokenizer as Tok

    assert len(tiny_clip_tokenizer().encode("id", add_special_tokens=False)) == 1
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "i": 2, "d</w>": 3}
    with pytest.raises(IdgenError, match="splits"):
        id_token_id(Tok(vocab=vocab, merges=[]))


def test_missing_official_files_are_named(tmp_path):
    (tmp_path / "arc2face").mkdir()
    (tmp_path / "arc2face" / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError) as err:
        check_arc2face_folders(tmp_path / "arc2face", tmp_path / "encoder")
    message = str(err.value)
    assert "arc2face/diffusion_pytorch_model.safetensors" in message and "encoder/config.json" in message
    assert "arc2face/config.json" not in message


def test_face_image_goes_through_the_analyzer():
    from idgen.face.types import Face

    class StubAnalyzer:
        name, embedding_model, embedding_dim = "stub", "stub", 512

        def get(self, image, select="largest"):
            return Face(bbox=[0, 0, 10, 10], score=1.0, kps=np.zeros((5, 2)), image_size=(10, 10), embedding=FACE[0])

    pipe = make_pipeline()
    pipe.face_analyzer = StubAnalyzer()
    np.testing.assert_array_equal(pipe(**inputs(face_embeds=None, face_image=np.zeros((10, 10, 3), np.uint8))).images,
                                  pipe(**inputs()).images)


class TestArc2FacePipeline(PipelineChecks):
    get_pipeline = staticmethod(make_pipeline)
    get_inputs = staticmethod(inputs)

    def test_prompt_embeds_twins_give_the_same_image(self):
        """Arc2Face's prompt embedding is the identity's (`encode_identity`), not the text's."""
        pipe = make_pipeline()
        embeds = pipe.encode_identity(torch.nn.functional.normalize(torch.as_tensor(FACE), dim=-1))
        negative, _ = pipe.encode_prompt("", "cpu", 1, False)
        twins = pipe(**inputs(face_embeds=None, prompt_embeds=embeds, negative_prompt_embeds=negative)).images
        np.testing.assert_array_equal(twins, pipe(**inputs()).images)
        with pytest.raises(IdgenError, match="exactly one"):
            pipe(**inputs(prompt_embeds=embeds))


def test_from_pipe_of_a_plain_stable_diffusion_pipeline():
    plain = make_pipeline(StableDiffusionPipeline)
    pipe = Arc2FacePipeline.from_pipe(plain)
    assert type(pipe) is Arc2FacePipeline and pipe.unet is plain.unet and pipe.text_encoder is plain.text_encoder
    pipe.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(pipe(**inputs()).images, make_pipeline()(**inputs()).images)


def test_official_folders_load_into_a_pipeline(tmp_path):
    from diffusers import DPMSolverMultistepScheduler

    from idgen.pipelines import load_arc2face_pipeline

    parts = components()
    base = StableDiffusionPipeline(**components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    base.save_pretrained(tmp_path / "sd15")
    parts["unet"].save_pretrained(tmp_path / "Arc2Face" / "arc2face")
    parts["text_encoder"].save_pretrained(tmp_path / "Arc2Face" / "encoder")
    pipe = load_arc2face_pipeline(tmp_path / "sd15", tmp_path / "Arc2Face")
    assert isinstance(pipe, Arc2FacePipeline) and isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(pipe(**inputs()).images, make_pipeline()(**inputs()).images)
