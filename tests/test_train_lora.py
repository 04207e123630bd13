"""DreamBooth-LoRA training, the shared loop's exact resume, and the `idgen train` CLI."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from idgen.app.cli import main
from idgen.errors import DatasetError, IdgenError
from idgen.train.loop import StepBatchSampler, TrainingArgs, run_training, step_generator
from idgen.train.lora import LoRAOptions, LoRATask

SIZE = 32


@pytest.fixture(scope="module")
def photos(faces_dir, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("instance")
    for name in ("portrait_glasses.jpg", "portrait_smile.jpg", "portrait_older.jpg"):
        shutil.copy(faces_dir / name, root)
    return root


def _args(out, steps, **kw):
    return TrainingArgs(output_dir=str(out), max_train_steps=steps, learning_rate=1e-3, train_batch_size=2,
                        progress=False, **kw)


def _options(photos, base="tiny-sd15", **kw):
    return LoRAOptions(base=base, instance_data=str(photos), resolution=SIZE, rank=4, validation_inference_steps=2,
                       num_validation_images=1, **kw)


def _image(pipe):
    return pipe("a photo of sks person", num_inference_steps=2, height=SIZE, width=SIZE, output_type="np",
                generator=torch.Generator().manual_seed(0)).images


def fixed_loss(task) -> float:
    batch = task.collate([task.dataset()[i] for i in range(3)])
    with torch.no_grad():
        return float(np.mean([task.loss(batch, step_generator(7, k, 0), task.trainable_modules()).item() for k in range(6)]))


@pytest.mark.parametrize("base", ["tiny-sd15", "tiny-sdxl"])
def test_lora_lowers_loss_and_reloads(photos, tmp_path, base):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from idgen.train.diffusion import load_base

    args = _args(tmp_path, 40)
    task = LoRATask(_options(photos, base, train_text_encoder=True), args)
    summary = run_training(task, args)
    trained_loss = fixed_loss(task)
    # LoRA B back to zero: the untrained model
    zero = {k: (torch.zeros_like(v) if "lora_B" in k else v.detach().clone()) for k, v in task.trainable_state_dict().items()}
    trained = {k: v.detach().clone() for k, v in task.trainable_state_dict().items()}
    task.load_trainable_state_dict(zero)
    assert trained_loss < fixed_loss(task) * 0.97
    task.load_trainable_state_dict(trained)

    weights = tmp_path / "pytorch_lora_weights.safetensors"
    assert summary.weights == [str(weights)] and (tmp_path / "summary.json").is_file()
    assert any(k.startswith("text_encoder") for k in load_file(weights))
    fresh = load_base((StableDiffusionPipeline, StableDiffusionXLPipeline), base)
    plain = _image(fresh)
    fresh.load_lora_weights(weights)
    reloaded = _image(fresh)
    np.testing.assert_allclose(reloaded, _image(task.pipe), atol=1e-5)
    assert np.abs(reloaded - plain).max() > 1e-4


def test_text_encoder_lora_does_not_need_transformers_peft_gate(photos, tmp_path, monkeypatch):
    """transformers 5.24 with peft 0.21.2: transformers' own adapter methods refuse that peft. The trainer
    attaches the text-encoder LoRA through peft, so it trains and saves on that pairing too."""
    import transformers.integrations.peft as hf_peft

    def refuse(min_version):
        raise ValueError(f"The version of PEFT you are using is not compatible, please use a version >= {min_version}")

    monkeypatch.setattr(hf_peft, "check_peft_version", refuse)
    args = _args(tmp_path, 2, gradient_checkpointing=True)
    task = LoRATask(_options(photos, train_text_encoder=True), args)
    run_training(task, args)
    saved = load_file(tmp_path / "pytorch_lora_weights.safetensors")
    up = [v for k, v in saved.items() if k.startswith("text_encoder.") and k.endswith("lora_linear_layer.up.weight")]
    assert up and any(v.abs().max() > 0 for v in up)  # LoRA B ("up") starts at zero: the text encoder trained


def test_lora_loads_into_idgen_pipelines(photos, tmp_path):
    from idgen.pipelines import StableDiffusionFaceIDPipeline
    from idgen.testing import random_faceid_state_dict, tiny_sd15_components

    args = _args(tmp_path, 3)
    run_training(LoRATask(_options(photos), args), args)
    pipe = StableDiffusionFaceIDPipeline(**tiny_sd15_components(0), requires_safety_checker=False)
    pipe.load_faceid(random_faceid_state_dict(pipe.unet, "faceid"), variant="faceid")
    pipe.load_lora_weights(tmp_path / "pytorch_lora_weights.safetensors", adapter_name="person")
    assert {"faceid", "person"} <= set(pipe.get_active_adapters())


def test_prior_preservation_generates_class_images(photos, tmp_path):
    args = _args(tmp_path / "run", 2)
    options = _options(photos, with_prior_preservation=True, class_data=str(tmp_path / "class"),
                       class_prompt="a photo of a person", num_class_images=3)
    run_training(LoRATask(options, args), args)
    assert len(list((tmp_path / "class").glob("*.png"))) == 3
    with pytest.raises(IdgenError, match="class-data"):
        _options(photos, with_prior_preservation=True)


def test_resume_continues_the_same_loss_curve(photos, tmp_path):
    full = run_training(LoRATask(_options(photos), a := _args(tmp_path / "full", 6, checkpointing_steps=3, use_ema=True)), a)
    first = run_training(LoRATask(_options(photos), b := _args(tmp_path / "split", 3, use_ema=True)), b)
    assert first.losses == full.losses[:3]
    resumed = run_training(LoRATask(_options(photos), c := _args(tmp_path / "split", 6, use_ema=True,
                                                                   resume_from_checkpoint="latest")), c)
    assert resumed.resumed_from.endswith("checkpoint-3")
    assert resumed.losses == full.losses
    a_weights = load_file(tmp_path / "full" / "pytorch_lora_weights.safetensors")
    b_weights = load_file(tmp_path / "split" / "pytorch_lora_weights.safetensors")
    assert all(torch.equal(a_weights[k], b_weights[k]) for k in a_weights)


def test_sampler_position_is_independent_of_process_count():
    def stream(world, start=0, batches=6):
        samplers = [iter(StepBatchSampler(10, 2, seed=3, start_sample=start, process_index=p, num_processes=world)) for p in range(world)]
        return [i for _ in range(batches) for s in samplers for i in next(s)]

    two = stream(2)
    assert stream(1, batches=12) == two  # the same global order with 1 or 2 processes
    assert stream(1, start=8, batches=8) == two[8:]  # resume mid-stream, other process count
    assert sorted(two[:10]) == list(range(10)) and sorted(two[10:20]) == list(range(10))  # epochs are permutations


def test_bad_instance_data(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = _args(tmp_path / "out", 2)
    with pytest.raises(DatasetError, match="no photos"):
        run_training(LoRATask(_options(empty), args), args)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="unreadable image"):
        run_training(LoRATask(_options(broken), args), args)
    assert not (tmp_path / "out" / "pytorch_lora_weights.safetensors").exists()
    assert not (tmp_path / "out" / "summary.json").exists()


def test_cli_trains_lora_and_adapter_from_prepared_dataset(photos, tmp_path, capsys):
    assert main(["train", "lora", "--base", "tiny-sd15", "--instance-data", str(photos), "--output-dir", str(tmp_path / "lora"),
                 "--resolution", str(SIZE), "--rank", "4", "--max-train-steps", "2", "--validation-inference-steps", "2",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "trained lora: 2 steps" in out and "pytorch_lora_weights.safetensors" in out
    # a dlib (128-d) dataset trains an InstantID-style adapter (its Resampler takes the dataset's width)
    assert main(["prepare-data", str(photos), str(tmp_path / "ds"), "--size", "256"]) == 0
    assert main(["train", "adapter", "--kind", "instantid", "--base", "tiny-sdxl", "--data", str(tmp_path / "ds"),
                 "--output-dir", str(tmp_path / "iid"), "--resolution", str(SIZE), "--max-train-steps", "2",
                 "--resampler-config", json.dumps({"dim": 64, "depth": 1, "dim_head": 16, "heads": 4, "num_queries": 4, "ff_mult": 2}),
                 "--validation-inference-steps", "2", "--no-progress"]) == 0
    assert json.loads((tmp_path / "iid" / "resampler_config.json").read_text())["embedding_dim"] == 128
    # wrong inputs: exit code 3 and a message, no weights
    assert main(["train", "adapter", "--kind", "faceid", "--base", "tiny-sd15", "--data", str(tmp_path / "ds"),
                 "--output-dir", str(tmp_path / "fid"), "--resolution", str(SIZE), "--max-train-steps", "2"]) == 3
    assert "512-d ArcFace" in capsys.readouterr().err
    assert main(["train", "adapter", "--kind", "faceid", "--base", "tiny-sd15", "--data", str(photos),
                 "--output-dir", str(tmp_path / "fid"), "--max-train-steps", "2"]) == 3
    assert "not an idgen dataset" in capsys.readouterr().err
