"""Identity-adapter training: it learns identities (synthetic dataset), every kind's output loads
into its pipeline, and bad datasets get clear errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from idgen.errors import DatasetError
from idgen.train.adapter import AdapterOptions, adapter_task, condition_dropout
from idgen.train.diffusion import encode_latents, noise_and_timesteps
from idgen.train.examples import image_to_tensor
from idgen.train.loop import TrainingArgs, run_training, step_generator

SIZE = 32
COLORS = [(0.85, 0.2, 0.15), (0.2, 0.3, 0.9)]  # identity A: red, horizontal stripes; B: blue checkerboard


def pattern(identity: int, variant: int) -> Image.Image:
    """A `SIZE` x `SIZE` image of `identity`; variants shift the texture's phase."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    rng = np.random.default_rng(100 * identity + variant)
    phase = rng.uniform(0, 1)
    if identity == 0:
        wave = np.sin(2 * np.pi * (4 * y + phase))
    else:
        wave = np.sign(np.sin(2 * np.pi * (3 * x + phase)) * np.sin(2 * np.pi * (3 * y + phase)))
    image = np.stack([c * (0.75 + 0.25 * wave) for c in COLORS[identity]], -1) + rng.normal(0, 0.02, (SIZE, SIZE, 3))
    return Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))


def records(identity_vectors, per_identity: int = 8, caption: str = "a photo"):
    """Prepared-dataset records (what `open_dataset` yields) of the synthetic identities."""
    kps = np.array([[10, 12], [22, 12], [16, 17], [11, 23], [21, 23]], np.float32)
    return [{"key": f"{i}-{v}", "image": pattern(i, v), "caption": caption, "embedding": vec, "kps": kps,
             "bbox": np.array([4, 4, 28, 28], np.float32), "identity": str(i), "embedding_model": "synthetic"}
            for i, vec in enumerate(identity_vectors) for v in range(per_identity)]


@pytest.fixture(scope="module")
def identity_vectors():
    rng = np.random.default_rng(0)
    return [rng.normal(size=512).astype(np.float32) for _ in COLORS]


@pytest.fixture(scope="module")
def synthetic_base(tmp_path_factory, identity_vectors):
    """A tiny SD1.5 whose UNet has learned to denoise the synthetic images (identity-blind).

    The adapter trains on a frozen base, so the base must denoise the data already, as a real SD
    does. The VAE's posterior is made near-deterministic (a trained VAE's is) and its scaling
    factor set for unit-variance latents (how SD's 0.18215 was chosen).
    """
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from idgen.testing import tiny_sd15_components

    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(**tiny_sd15_components(0), requires_safety_checker=False)
    pixels = torch.stack([image_to_tensor(r["image"], SIZE) for r in records(identity_vectors)])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        quant = pipe.vae.quant_conv
        quant.weight[4:] = 0.0
        quant.bias[4:] = -12.0
    latents = encode_latents(pipe.vae, pixels, generator)
    pipe.vae.register_to_config(scaling_factor=float(pipe.vae.config.scaling_factor / latents.std()))
    latents = encode_latents(pipe.vae, pixels, generator)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    with torch.no_grad():
        text = pipe.encode_prompt(["a photo"] * len(pixels), "cpu", 1, False)[0]
    optimizer = torch.optim.AdamW(pipe.unet.parameters(), lr=1e-3)
    for _ in range(200):
        noise, t = noise_and_timesteps(latents, scheduler, generator)
        pred = pipe.unet(scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=text).sample
        torch.nn.functional.mse_loss(pred, noise).backward()
        optimizer.step()
        optimizer.zero_grad()
    path = tmp_path_factory.mktemp("synthetic_base")
    pipe.save_pretrained(path)
    return path


def fixed_loss(task, batch) -> float:
    """The training loss on fixed draws (noise, timesteps, dropout): comparable across weights."""
    with torch.no_grad():
        return float(np.mean([task.loss(batch, step_generator(123, k, 0), task.trainable_modules()).item() for k in range(8)]))


def test_adapter_learns_identities(synthetic_base, identity_vectors, tmp_path):
    recs = records(identity_vectors)
    args = TrainingArgs(output_dir=str(tmp_path / "run"), max_train_steps=200, learning_rate=2e-3, train_batch_size=8,
                        checkpointing_steps=1000, progress=False)
    options = AdapterOptions(kind="faceid", base=str(synthetic_base), data=recs, resolution=SIZE, lora_rank=8,
                             text_dropout=0.0, validation_inference_steps=2)
    task = adapter_task(options, args)
    summary = run_training(task, args)
    assert summary.steps == 200 and (tmp_path / "run" / "ip-adapter-faceid.safetensors").is_file()

    # the loss falls: trained weights against the initial ones, on the same fixed draws
    batch = task.collate([task.data[i] for i in range(len(recs))])
    trained_loss = fixed_loss(task, batch)
    trained = {k: v.detach().clone() for k, v in task.trainable_state_dict().items()}
    fresh = adapter_task(options, TrainingArgs(output_dir=str(tmp_path / "fresh"), max_train_steps=1))
    torch.manual_seed(args.seed)  # run_training seeds before set-up
    from accelerate import Accelerator

    fresh.setup(Accelerator(cpu=True), torch.float32)
    task.load_trainable_state_dict(fresh.trainable_state_dict())
    initial_loss = fixed_loss(task, batch)
    assert trained_loss < initial_loss * 0.95, (trained_loss, initial_loss)
    task.load_trainable_state_dict(trained)

    # samples of A are closer to A's training latents than to B's, and the reverse
    pipe = task.pipe
    means = []
    for identity in range(len(COLORS)):
        pixels = torch.stack([task.data[j]["pixel_values"] for j, r in enumerate(recs) if r["identity"] == str(identity)])
        means.append(encode_latents(pipe.vae, pixels, torch.Generator().manual_seed(0)).mean(0))

    def distances(scale: float) -> np.ndarray:
        pipe.set_faceid_scale(scale, lora_scale=scale)
        rows = []
        for vec in identity_vectors:
            latent = pipe(face_embeds=torch.from_numpy(vec)[None], prompt="a photo", num_inference_steps=20,
                          guidance_scale=3.0, height=SIZE, width=SIZE, output_type="latent",
                          generator=torch.Generator().manual_seed(1)).images[0]
            rows.append([float((latent - m).pow(2).mean()) for m in means])
        return np.array(rows)

    on = distances(1.0)
    assert on[0, 0] < on[0, 1] and on[1, 1] < on[1, 0], on
    off = distances(0.0)  # adapter switched off: one sample whatever the identity, so not both
    np.testing.assert_array_equal(off[0], off[1])
    assert not (off[0, 0] < off[0, 1] and off[1, 1] < off[1, 0])


def small_options(kind: str, base: str, recs, **kw) -> AdapterOptions:
    return AdapterOptions(kind=kind, base=base, data=recs, resolution=SIZE, lora_rank=4, validation_inference_steps=2,
                          resampler_config=json.dumps({"dim": 64, "depth": 1, "dim_head": 16, "heads": 4, "num_queries": 4, "ff_mult": 2}),
                          tiny_text_width=512 if kind == "arc2face" else 32, **kw)


def train_briefly(kind: str, base: str, identity_vectors, out) -> tuple:
    args = TrainingArgs(output_dir=str(out), max_train_steps=3, learning_rate=1e-3, train_batch_size=2, progress=False)
    task = adapter_task(small_options(kind, base, records(identity_vectors, per_identity=2)), args)
    return task, run_training(task, args)


def _sample(pipe, embeds, **kw):
    return pipe(face_embeds=embeds, num_inference_steps=2, height=SIZE, width=SIZE, output_type="np",
                generator=torch.Generator().manual_seed(0), **kw).images


@pytest.mark.parametrize("base", ["tiny-sd15", "tiny-sdxl"])
def test_faceid_output_loads_into_pipeline(base, identity_vectors, tmp_path):
    task, summary = train_briefly("faceid", base, identity_vectors, tmp_path)
    from idgen.train.diffusion import load_base
    from idgen.pipelines import StableDiffusionFaceIDPipeline, StableDiffusionXLFaceIDPipeline

    pipe = load_base((StableDiffusionFaceIDPipeline, StableDiffusionXLFaceIDPipeline), base)
    pipe.load_faceid(tmp_path / "ip-adapter-faceid.safetensors")
    embeds = torch.from_numpy(identity_vectors[0])[None]
    embeds = embeds / embeds.norm()
    expected = _sample(task.pipe, embeds, prompt="a photo")
    np.testing.assert_allclose(_sample(pipe, embeds, prompt="a photo"), expected, atol=1e-5)


@pytest.mark.parametrize("base", ["tiny-sd15", "tiny-sdxl"])
def test_instantid_output_loads_into_pipeline(base, identity_vectors, tmp_path):
    from diffusers import ControlNetModel

    from idgen.conditioning import draw_kps
    from idgen.pipelines import StableDiffusionXLInstantIDPipeline, StableDiffusionInstantIDPipeline
    from idgen.train.adapter import rebuild_pipeline
    from idgen.train.diffusion import load_base

    task, summary = train_briefly("instantid", base, identity_vectors, tmp_path)
    assert {p.rsplit("/", 1)[-1] for p in summary.weights} == {"ip-adapter.safetensors", "resampler_config.json", "ControlNetModel"}
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    plain = load_base((StableDiffusionPipeline, StableDiffusionXLPipeline), base)
    cls = StableDiffusionXLInstantIDPipeline if base == "tiny-sdxl" else StableDiffusionInstantIDPipeline
    pipe = rebuild_pipeline(cls, plain, controlnet=ControlNetModel.from_pretrained(tmp_path / "ControlNetModel"))
    pipe.load_instantid(tmp_path / "ip-adapter.safetensors",
                        resampler_config=json.loads((tmp_path / "resampler_config.json").read_text()))
    embeds = torch.from_numpy(identity_vectors[0])[None]
    kps = draw_kps((SIZE, SIZE), records(identity_vectors)[0]["kps"])
    expected = _sample(task.pipe, embeds, prompt="a photo", image=kps)
    np.testing.assert_allclose(_sample(pipe, embeds, prompt="a photo", image=kps), expected, atol=1e-5)


def test_arc2face_output_loads_into_pipeline(identity_vectors, tmp_path):
    from transformers import CLIPTextModel

    from idgen.pipelines import Arc2FacePipeline
    from idgen.train.diffusion import load_base

    task, summary = train_briefly("arc2face", "tiny-sd15", identity_vectors, tmp_path)
    base = load_base((Arc2FacePipeline, Arc2FacePipeline), "tiny-sd15", tiny_text_width=512)
    embeds = torch.from_numpy(identity_vectors[0])[None]
    before = _sample(base, embeds)
    base.text_encoder = CLIPTextModel.from_pretrained(tmp_path / "encoder")
    after = _sample(base, embeds)
    np.testing.assert_allclose(after, _sample(task.pipe, embeds), atol=1e-5)
    assert np.abs(after - before).max() > 1e-4  # the encoder did change


def test_condition_dropout_rates():
    options = AdapterOptions(kind="faceid", base="tiny-sd15", data="x", text_dropout=0.1, identity_dropout=0.2, both_dropout=0.3)
    text, identity = condition_dropout(100_000, options, torch.Generator().manual_seed(0))
    both = (text & identity).float().mean().item()
    assert abs(both - 0.3) < 0.01
    assert abs((text & ~identity).float().mean().item() - 0.1) < 0.01
    assert abs((identity & ~text).float().mean().item() - 0.2) < 0.01


def test_faceid_refuses_non_arcface_embeddings(tmp_path):
    recs = records([np.ones(128, np.float32), -np.ones(128, np.float32)], per_identity=1)
    args = TrainingArgs(output_dir=str(tmp_path), max_train_steps=1, progress=False)
    with pytest.raises(DatasetError, match="512-d ArcFace"):
        run_training(adapter_task(small_options("faceid", "tiny-sd15", recs), args), args)
    assert not (tmp_path / "ip-adapter-faceid.safetensors").exists()


def test_bad_options_are_refused():
    from idgen.errors import IdgenError

    with pytest.raises(IdgenError, match="--kind"):
        AdapterOptions(kind="photomaker", base="tiny-sd15", data="x")
    with pytest.raises(IdgenError, match="sum to at most 1"):
        AdapterOptions(kind="faceid", base="tiny-sd15", data="x", text_dropout=0.6, identity_dropout=0.6)
