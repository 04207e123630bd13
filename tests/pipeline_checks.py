"""Generic checks every idgen pipeline must pass, in the spirit of diffusers'
`PipelineTesterMixin`. A test class sets `get_pipeline()` (tiny, seeded, on CPU) and
`get_inputs(seed)` (2 steps, `output_type="np"`) and inherits the checks: output and determinism,
batching, return types, callbacks, scheduler swaps, save/load, components reuse and `from_pipe`
(without touching the original pipeline), attention slicing, `None` components, the `*_embeds`
twins of the prompt, `encode_prompt` in isolation, and the call signature.

Set `text_conditioned = False` for a pipeline without a text prompt (SVFR): the prompt checks
are then skipped with the reason.
"""

from __future__ import annotations

import copy
import functools
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

#: What a text-conditioned diffusers pipeline's `__call__` names explicitly (not via **kwargs).
TEXT_CALL_ARGUMENTS = ("prompt", "negative_prompt", "num_inference_steps", "guidance_scale", "num_images_per_prompt",
                       "generator", "latents", "prompt_embeds", "negative_prompt_embeds", "output_type", "return_dict",
                       "cross_attention_kwargs", "callback_on_step_end", "callback_on_step_end_tensor_inputs")
PROMPT_EMBEDS = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")


def _images(output):
    return output.frames if hasattr(output, "frames") else output.images


class PipelineChecks:
    text_conditioned = True

    def get_pipeline(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def get_inputs(self, seed: int = 0) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def run(self, pipe, **overrides):
        inputs = self.get_inputs()
        inputs.update(overrides)
        return _images(pipe(**inputs))

    def _text_only(self):
        if not self.text_conditioned:
            pytest.skip(f"{type(self).__name__}: the pipeline takes no text prompt")

    def test_output_shape_and_range(self):
        image = self.run(self.get_pipeline())
        assert image.ndim == 4 and image.shape[-1] == 3
        assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0

    def test_same_seed_same_image(self):
        pipe = self.get_pipeline()
        np.testing.assert_array_equal(self.run(pipe), self.run(pipe))

    def test_num_images_per_prompt(self):
        self._text_only()
        images = self.run(self.get_pipeline(), num_images_per_prompt=2)
        assert images.shape[0] == 2

    def test_return_dict_false_and_output_types(self):
        pipe = self.get_pipeline()
        inputs = self.get_inputs()
        out = pipe(**{**inputs, "return_dict": False})
        assert isinstance(out, tuple)
        pil = _images(pipe(**{**inputs, "output_type": "pil"}))
        assert hasattr(pil[0], "size")
        latent = _images(pipe(**{**inputs, "output_type": "latent"}))
        assert isinstance(latent, torch.Tensor) and latent.ndim == 4

    @pytest.mark.parametrize("name, value", [("num_inference_steps", 0), ("num_inference_steps", -1),
                                             ("guidance_scale", float("nan")), ("guidance_scale", float("inf"))])
    def test_bad_sampling_values_are_refused_by_name(self, name, value):
        """0 steps used to be a ZeroDivisionError inside the scheduler, NaN CFG a black image."""
        pipe = self.get_pipeline()
        called = []
        pipe.unet.register_forward_pre_hook(lambda *a: called.append(1))
        with pytest.raises(ValueError, match=name):
            self.run(pipe, **{name: value})
        assert not called, "a model ran before the check"

    def test_callback_on_step_end(self):
        pipe = self.get_pipeline()
        seen = []

        def callback(p, step, timestep, kwargs):
            seen.append(step)
            assert "latents" in kwargs
            return kwargs

        inputs = self.get_inputs()
        pipe(**inputs, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"])
        # every step the loop ran (img2img / SDXL inpainting strength may run fewer than asked)
        assert seen and seen == list(range(len(seen))) and len(seen) <= inputs["num_inference_steps"]
        assert len(seen) == getattr(pipe, "num_timesteps", len(seen))

    def test_callback_can_change_latents(self):
        pipe = self.get_pipeline()
        reference = self.run(pipe)

        def zero_latents(p, step, timestep, kwargs):
            return {"latents": torch.zeros_like(kwargs["latents"])}

        changed = self.run(pipe, callback_on_step_end=zero_latents)
        assert np.abs(changed - reference).max() > 1e-4

    def test_scheduler_swap(self):
        from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

        pipe = self.get_pipeline()
        outputs = []
        for cls in (EulerDiscreteScheduler, DPMSolverMultistepScheduler):
            pipe.scheduler = cls.from_config(pipe.scheduler.config)
            outputs.append(self.run(pipe))
        assert np.isfinite(outputs[0]).all() and np.isfinite(outputs[1]).all()
        assert np.abs(outputs[0] - outputs[1]).max() > 1e-6

    def test_save_load_roundtrip_bit_identical(self, tmp_path):
        pipe = self.get_pipeline()
        before = self.run(pipe)
        pipe.save_pretrained(tmp_path)
        reloaded = type(pipe).from_pretrained(tmp_path)
        np.testing.assert_array_equal(self.run(reloaded), before)

    # -- reuse of components (diffusers: test_components_function, from_pipe) --------------------
    def test_components_reuse_and_from_pipe_leave_the_original_alone(self):
        pipe = self.get_pipeline()
        before = self.run(pipe)
        rebuilt = type(pipe)(**pipe.components)
        rebuilt.set_progress_bar_config(disable=True)
        np.testing.assert_allclose(self.run(rebuilt), before, atol=1e-5)
        moved = type(pipe).from_pipe(pipe)
        moved.set_progress_bar_config(disable=True)
        np.testing.assert_allclose(self.run(moved), before, atol=1e-5)
        np.testing.assert_array_equal(self.run(pipe), before)

    def test_swapped_component_keeps_the_identity(self):
        """A pipeline built from the components with one swapped (here a copied VAE) runs as the
        original: identity state must not live on the pipeline object alone."""
        pipe = self.get_pipeline()
        before = self.run(pipe)
        swapped = type(pipe)(**{**pipe.components, "vae": copy.deepcopy(pipe.vae)})
        swapped.set_progress_bar_config(disable=True)
        np.testing.assert_allclose(self.run(swapped), before, atol=1e-5)

    def test_attention_slicing(self):
        pipe = self.get_pipeline()
        before = self.run(pipe)
        pipe.enable_attention_slicing(slice_size=1)
        np.testing.assert_allclose(self.run(pipe), before, atol=1e-4)
        pipe.disable_attention_slicing()
        np.testing.assert_allclose(self.run(pipe), before, atol=1e-5)

    def test_optional_components_can_be_none(self, tmp_path):
        pipe = self.get_pipeline()
        optional = [name for name in pipe._optional_components if name in pipe.components]
        bare = type(pipe)(**{**pipe.components, **{name: None for name in optional}})
        bare.save_pretrained(tmp_path)
        reloaded = type(pipe).from_pretrained(tmp_path)
        assert all(getattr(reloaded, name, None) is None for name in optional
                   if getattr(bare, name, None) is None)

    # -- the prompt (diffusers: test_encode_prompt_works_in_isolation, *_embeds twins) -----------
    def _encoded(self, pipe, inputs) -> dict:
        parameters = inspect.signature(pipe.encode_prompt).parameters
        kwargs = {"prompt": inputs.get("prompt", ""), "device": pipe.device, "num_images_per_prompt": 1,
                  "do_classifier_free_guidance": inputs.get("guidance_scale", 5.0) > 1.0,
                  "negative_prompt": inputs.get("negative_prompt")}
        out = pipe.encode_prompt(**{k: v for k, v in kwargs.items() if k in parameters})
        return {name: value for name, value in zip(PROMPT_EMBEDS, out) if value is not None}

    def test_prompt_embeds_twins_give_the_same_image(self):
        self._text_only()
        pipe = self.get_pipeline()
        inputs = self.get_inputs()
        before = self.run(pipe)
        embeds = self._encoded(pipe, inputs)
        twins = {k: v for k, v in inputs.items() if k not in ("prompt", "negative_prompt")}
        np.testing.assert_allclose(_images(pipe(**twins, **embeds)), before, atol=1e-5)

    def test_encode_prompt_works_in_isolation(self):
        self._text_only()
        pipe = self.get_pipeline()
        embeds = self._encoded(pipe, self.get_inputs())
        assert embeds["prompt_embeds"].ndim == 3 and torch.isfinite(embeds["prompt_embeds"]).all()

    def test_call_signature_is_explicit(self):
        self._text_only()
        parameters = inspect.signature(type(self.get_pipeline()).__call__).parameters
        missing = [name for name in TEXT_CALL_ARGUMENTS if name not in parameters]
        assert not missing, f"__call__ takes {missing} only through **kwargs"


@functools.lru_cache(maxsize=None)
def parity_parts(case_dir: Path) -> dict:
    """A parity case's tiny SD1.5 components, read once per session (shared: do not modify)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    return dict(
        vae=AutoencoderKL.from_pretrained(case_dir / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(case_dir / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(case_dir / "tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(case_dir / "unet"),
        scheduler=DDIMScheduler.from_pretrained(case_dir / "scheduler"),
    )


def parity_sd15_components(case_dir: Path) -> dict:
    """Fresh copies of a parity case's tiny SD1.5 components (read once per session)."""
    return {k: (v if k == "tokenizer" else copy.deepcopy(v)) for k, v in parity_parts(Path(case_dir)).items()}
