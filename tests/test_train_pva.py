"""PVA training: stage 1 lowers the inpainting loss, its output loads into the pipeline, and the
per-identity fine-tune starts from saved weights."""

import numpy as np
import pytest
import torch

from idgen.errors import IdgenError
from idgen.pipelines import StableDiffusionPVAInpaintPipeline
from idgen.train.adapter import AdapterOptions, adapter_task
from idgen.train.diffusion import load_base
from idgen.train.loop import TrainingArgs, run_training

from test_train_adapter import SIZE, fixed_loss, records


@pytest.fixture(scope="module")
def identity_vectors():
    rng = np.random.default_rng(0)
    return [rng.normal(size=512).astype(np.float32) for _ in range(2)]


def options(recs, **kw):
    return AdapterOptions(kind="pva", base="tiny-sd15-inpaint", data=recs, resolution=SIZE, pva_tokens=4, pva_layers=1,
                          pva_heads=2, validation_inference_steps=2, **kw)


def train(recs, out, steps, **kw):
    args = TrainingArgs(output_dir=str(out), max_train_steps=steps, learning_rate=3e-3, train_batch_size=4, progress=False)
    task = adapter_task(options(recs, **kw), args)
    return task, run_training(task, args)


def test_stage_one_lowers_the_loss_and_loads_into_the_pipeline(identity_vectors, tmp_path):
    recs = records(identity_vectors, per_identity=4)
    args = TrainingArgs(output_dir=str(tmp_path / "probe"), max_train_steps=1, progress=False)
    probe = adapter_task(options(recs), args)
    from accelerate import Accelerator

    probe.setup(Accelerator(cpu=True), torch.float32)
    batch = probe.collate([probe.dataset()[i] for i in range(8)])
    before = fixed_loss(probe, batch)

    task, summary = train(recs, tmp_path, 60)
    after = fixed_loss(task, batch)
    assert after < 0.95 * before, (before, after)

    pipe = load_base((StableDiffusionPVAInpaintPipeline, StableDiffusionPVAInpaintPipeline), "tiny-sd15-inpaint")
    pipe.load_pva(tmp_path / "pva_adapter")
    kwargs = {**task.pipeline_kwargs(), "face_embeds": identity_vectors[0][None], "num_inference_steps": 2,
              "height": SIZE, "width": SIZE, "output_type": "np"}
    task.pipe.pva_adapter.eval()  # dropout off, as a loaded adapter
    expected = task.pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    np.testing.assert_allclose(pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images, expected, atol=1e-5)


def test_per_identity_finetune_starts_from_saved_weights(identity_vectors, tmp_path):
    recs = records(identity_vectors, per_identity=2)
    first, _ = train(recs, tmp_path / "stage1", 2)
    person = [r for r in recs if r["identity"] == "0"]
    tuned, _ = train(person, tmp_path / "person", 2, init_adapter=str(tmp_path / "stage1" / "pva_adapter"))
    start = first.pipe.pva_adapter.state_dict()
    end = tuned.pipe.pva_adapter.state_dict()
    assert start.keys() == end.keys()
    assert any(not torch.equal(start[k], end[k]) for k in start)  # it trained
    assert max((start[k] - end[k]).abs().max().item() for k in start) < 0.1  # from the saved weights, not anew


def test_pva_needs_an_inpainting_unet(identity_vectors, tmp_path):
    args = TrainingArgs(output_dir=str(tmp_path), max_train_steps=1, progress=False)
    task = adapter_task(AdapterOptions(kind="pva", base="tiny-sd15", data=records(identity_vectors, per_identity=1),
                                       resolution=SIZE, pva_tokens=4, pva_layers=1, pva_heads=2), args)
    with pytest.raises(IdgenError, match="9 input channels"):
        run_training(task, args)
