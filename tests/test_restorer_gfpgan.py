"""GFPGAN v1.3 / v1.4 (`idgen.restorers.gfpgan`): parity with the official `GFPGANv1Clean` on tiny
seeded weights (tests/data/parity/gfpgan/, made by bench/parity/gfpgan.py), the official full-size
layout (tests/data/layouts/gfpgan_v1.4.json) loading unchanged, and bad files / inputs refused by name.

Noise: the official forward (as `GFPGANer.enhance` calls it) draws the decoder noise from the
global RNG; the reference was made with `torch.manual_seed(noise_seed)` right before the call, and
idgen gets `torch.Generator().manual_seed(noise_seed)` (the same CPU draws, in the same order).
The `randomize_noise=False` reference (stored noise buffers) is compared too."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from idgen.errors import CheckpointError, IdgenError, ModelNotFoundError
from idgen.restorers.gfpgan import GFPGAN, GFPGAN_CONFIG, GFPGAN_FILES, load_gfpgan

DATA = Path(__file__).parent / "data"
PARITY = DATA / "parity" / "gfpgan"
CASE = json.loads((PARITY / "case.json").read_text())
TINY = CASE["config"]


def full_layout():
    return {k: tuple(v) for k, v in json.loads((DATA / "layouts" / "gfpgan_v1.4.json").read_text())["keys"].items()}


def meta_state_dict(keys):
    return {k: torch.empty(shape, device="meta") for k, shape in keys.items()}


@pytest.fixture(scope="module")
def tiny():
    return load_gfpgan(PARITY / "weights.safetensors", config=TINY)


@pytest.fixture(scope="module")
def face():
    return torch.from_numpy(np.load(PARITY / "input.npy"))


def test_parity_with_official_random_noise(tiny, face):
    expected = np.load(PARITY / "expected.npy")
    with torch.no_grad():
        out = tiny(face, generator=torch.Generator().manual_seed(CASE["case"]["noise_seed"]))
    assert out.shape == face.shape and out.dtype == torch.float32
    assert np.abs(out.numpy() - expected).max() <= 1e-4
    with torch.no_grad(), torch.random.fork_rng():  # no generator: the global RNG, as the official code
        torch.manual_seed(CASE["case"]["noise_seed"])
        assert np.abs(tiny(face).numpy() - expected).max() <= 1e-4


def test_parity_with_official_stored_noise(tiny, face):
    expected = np.load(PARITY / "expected_stored_noise.npy")
    with torch.no_grad():
        out = tiny(face, randomize_noise=False).numpy()
    assert np.abs(out - expected).max() <= 1e-4
    assert np.abs(expected - np.load(PARITY / "expected.npy")).max() > 1e-2  # the noise matters in this case


def test_generator_makes_output_reproducible(tiny, face):
    with torch.no_grad():
        a, b, c = (tiny(face[:1], generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_loaded_tiny_model_is_eval_float32_cpu(tiny):
    assert not tiny.training
    assert {(t.dtype, t.device.type) for t in tiny.state_dict().values()} == {(torch.float32, "cpu")}


def test_official_layout_loads_unchanged():
    keys = full_layout()
    assert len(keys) == 285 and "stylegan_decoder.noises.noise14" in keys
    for source in (meta_state_dict(keys), {"params_ema": meta_state_dict(keys)}, {"params": meta_state_dict(keys)}):
        model = load_gfpgan(source)
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == keys
        assert all(v.is_meta for v in model.state_dict().values())  # nothing allocated
    assert GFPGAN_FILES == ("GFPGANv1.4.pth", "GFPGANv1.3.pth")
    assert GFPGAN_CONFIG["out_size"] == 512 and GFPGAN_CONFIG["sft_half"] and GFPGAN_CONFIG["different_w"]


def test_missing_file_names_the_release(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"GFPGANv1\.4\.pth.*github\.com/TencentARC/GFPGAN/releases"):
        load_gfpgan(tmp_path / "GFPGANv1.4.pth")


def test_missing_or_misshaped_key_is_named():
    keys = full_layout()
    victim = "stylegan_decoder.style_convs.5.modulated_conv.weight"
    with pytest.raises(CheckpointError, match=f"missing key '{victim}'"):
        load_gfpgan({"params_ema": meta_state_dict({k: s for k, s in keys.items() if k != victim})})
    wrong = meta_state_dict({**keys, victim: tuple(d + 1 for d in keys[victim])})
    with pytest.raises(CheckpointError, match=f"'{victim}' has shape"):
        load_gfpgan(wrong)
    with pytest.raises(CheckpointError, match="unexpected key 'extra.weight'"):
        load_gfpgan(meta_state_dict({**keys, "extra.weight": (3,)}))


def test_codeformer_file_is_refused_by_key():
    codeformer = {"params_ema": meta_state_dict({"position_emb": (256, 512), "quantize.embedding.weight": (1024, 256),
                                                 "encoder.blocks.0.weight": (64, 3, 3, 3)})}
    with pytest.raises(CheckpointError, match="missing key 'conv_body_first.weight'"):
        load_gfpgan(codeformer)


def test_corrupt_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "GFPGANv1.4.pth"
    path.write_bytes(b"PK\x03\x04 not really a torch file")
    with pytest.raises(CheckpointError, match="could not be read"):
        load_gfpgan(path)


def test_tiny_config_mismatch_is_named():
    with pytest.raises(CheckpointError, match="has shape"):
        load_gfpgan(PARITY / "weights.safetensors", config={**TINY, "num_style_feat": 8})


@pytest.mark.parametrize("bad", [torch.zeros(1, 3, 32, 32), torch.zeros(3, 64, 64), torch.zeros(1, 4, 64, 64),
                                 torch.zeros(1, 3, 64, 48), torch.zeros(0, 3, 64, 64),
                                 torch.zeros(1, 3, 64, 64, dtype=torch.uint8), np.zeros((1, 3, 64, 64))])
def test_wrong_input_is_a_clear_error(tiny, bad):
    with pytest.raises(IdgenError, match="GFPGAN input"):
        tiny(bad)


@pytest.mark.parametrize("config", [{"out_size": 100}, {"out_size": 4}, {"narrow": 1 / 1024}])
def test_impossible_config_is_refused(config):
    with pytest.raises(IdgenError, match="GFPGAN"):
        GFPGAN(**{**TINY, **config})
    with pytest.raises(IdgenError, match="unknown key 'size'"):
        load_gfpgan(PARITY / "weights.safetensors", config={"size": 64})
