"""Generic checks every idgen pipeline must pass, in the spirit of diffusers'
`PipelineTesterMixin`. A test class sets `get_pipeline()` (tiny, seeded, on CPU) and
`get_inputs(seed)` (2 steps, `output_type="np"`) and inherits the checks."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import torch


class PipelineChecks:
    def get_pipeline(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def get_inputs(self, seed: int = 0) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def run(self, pipe, **overrides):
        inputs = self.get_inputs()
        inputs.update(overrides)
        return pipe(**inputs).images

    def test_output_shape_and_range(self):
        image = self.run(self.get_pipeline())
        assert image.ndim == 4 and image.shape[-1] == 3
        assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0

    def test_same_seed_same_image(self):
        pipe = self.get_pipeline()
        np.testing.assert_array_equal(self.run(pipe), self.run(pipe))

    def test_num_images_per_prompt(self):
        images = self.run(self.get_pipeline(), num_images_per_prompt=2)
        assert images.shape[0] == 2

    def test_return_dict_false_and_output_types(self):
        pipe = self.get_pipeline()
        inputs = self.get_inputs()
        out = pipe(**{**inputs, "return_dict": False})
        assert isinstance(out, tuple)
        pil = pipe(**{**inputs, "output_type": "pil"}).images
        assert hasattr(pil[0], "size")
        latent = pipe(**{**inputs, "output_type": "latent"}).images
        assert isinstance(latent, torch.Tensor) and latent.ndim == 4

    def test_callback_on_step_end(self):
        pipe = self.get_pipeline()
        seen = []

        def callback(p, step, timestep, kwargs):
            seen.append(step)
            assert "latents" in kwargs
            return kwargs

        inputs = self.get_inputs()
        pipe(**inputs, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"])
        assert seen == list(range(inputs["num_inference_steps"]))

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
