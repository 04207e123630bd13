"""CodeFormer (`idgen.restorers.codeformer`): parity with the official code on tiny seeded weights
(tests/data/parity/codeformer/, written by bench/parity/codeformer.py), the official full-size
layout (tests/data/layouts/codeformer.json) loading unchanged, refused files, and input checks."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from idgen.checkpoint import module_state_shapes
from idgen.errors import CheckpointError, IdgenError, ModelNotFoundError
from idgen.restorers.codeformer import CODEFORMER_FILE, CodeFormer, load_codeformer
from idgen.testing.restorers import seeded_state_dict

DATA = Path(__file__).parent / "data"
PARITY = DATA / "parity" / "codeformer"
CASE = json.loads((PARITY / "case.json").read_text())
TINY = CASE["config"]


def digest(state_dict):
    sha = hashlib.sha256()
    for key in sorted(state_dict):
        sha.update(key.encode())
        sha.update(state_dict[key].float().contiguous().numpy().tobytes())
    return sha.hexdigest()


def full_layout():
    return {k: tuple(v) for k, v in json.loads((DATA / "layouts" / "codeformer.json").read_text())["keys"].items()}


def meta_state_dict(shapes):
    return {k: torch.empty(shape, device="meta") for k, shape in shapes.items()}


@pytest.fixture(scope="module")
def tiny_weights():
    with torch.device("meta"):
        shapes = module_state_shapes(CodeFormer(**TINY))
    weights = seeded_state_dict(shapes, CASE["seed"])
    assert digest(weights) == CASE["weights_sha256"], "the tiny weights differ from those the reference was made with"
    return weights


@pytest.fixture(scope="module")
def tiny_model(tiny_weights):
    return load_codeformer(tiny_weights, TINY)


@pytest.fixture(scope="module")
def case_input():
    return torch.from_numpy(np.load(PARITY / CASE["input"]))


# -- parity with the official code --------------------------------------------------------------

@pytest.mark.parametrize("w", sorted(CASE["outputs"]))
def test_matches_official_outputs(tiny_model, case_input, w):
    expected = torch.from_numpy(np.load(PARITY / CASE["outputs"][w]))
    with torch.no_grad():
        out = tiny_model(case_input, w=float(w))
    assert out.shape == expected.shape == case_input.shape
    assert (out - expected).abs().max().item() <= 1e-4


def test_w_changes_the_output(tiny_model, case_input):
    with torch.no_grad():
        low, high = (tiny_model(case_input[:1], w=w) for w in (0.0, 1.0))
    assert (low - high).abs().max() > 1e-2


def test_a_sample_does_not_depend_on_its_batch(tiny_model, case_input):
    with torch.no_grad():
        batch = tiny_model(case_input, w=0.7)
        single = tiny_model(case_input[1:], w=0.7)
    torch.testing.assert_close(single[0], batch[1], atol=1e-4, rtol=0)  # float noise only


# -- the official full-size layout --------------------------------------------------------------

def test_idgen_module_has_the_official_layout():
    with torch.device("meta"):
        model = CodeFormer()
    assert list(module_state_shapes(model).items()) == list(full_layout().items())


@pytest.mark.parametrize("wrap", [None, "params_ema", "params", "state_dict"])
def test_official_layout_loads_unchanged(wrap):
    keys = full_layout()
    weights = meta_state_dict(keys)
    model = load_codeformer(weights if wrap is None else {wrap: weights})
    assert module_state_shapes(model) == keys
    assert all(t.is_meta for t in model.state_dict().values())  # nothing allocated
    assert not model.training


def test_params_ema_is_taken_before_params():
    keys = full_layout()
    ema, raw = meta_state_dict(keys), meta_state_dict({k: (1,) for k in keys})
    model = load_codeformer({"params": raw, "params_ema": ema})
    assert module_state_shapes(model) == keys


def test_file_round_trip_is_float32_on_cpu(tmp_path, tiny_weights, tiny_model):
    path = tmp_path / CODEFORMER_FILE
    torch.save({"params_ema": {k: v.half() for k, v in tiny_weights.items()}}, path)
    model = load_codeformer(path, TINY)
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in model.state_dict().values())
    expected = tiny_model.state_dict()
    assert all(torch.equal(t, expected[k].half().float()) for k, t in model.state_dict().items())


# -- refused files ------------------------------------------------------------------------------

def test_missing_file_names_the_release(tmp_path):
    with pytest.raises(ModelNotFoundError, match="codeformer.pth") as info:
        load_codeformer(tmp_path / CODEFORMER_FILE)
    assert "github.com/sczhou/CodeFormer/releases" in str(info.value) and "v0.1.0" in str(info.value)
    with pytest.raises(ModelNotFoundError, match="codeformer.pth"):
        load_codeformer(None)


def test_missing_misshaped_or_extra_key_is_named():
    keys = full_layout()
    victim = "ft_layers.4.self_attn.in_proj_weight"
    with pytest.raises(CheckpointError, match=f"missing key '{victim}'"):
        load_codeformer({"params_ema": meta_state_dict({k: s for k, s in keys.items() if k != victim})})
    with pytest.raises(CheckpointError, match=f"'{victim}' has shape"):
        load_codeformer(meta_state_dict({**keys, victim: (1536, 256)}))
    with pytest.raises(CheckpointError, match="'fuse_convs_dict.512.scale.0.weight'"):
        load_codeformer(meta_state_dict({**keys, "fuse_convs_dict.512.scale.0.weight": (64, 64, 3, 3)}))


def test_vqgan_only_checkpoint_is_refused():
    vqgan = {k: s for k, s in full_layout().items() if k.split(".")[0] in ("encoder", "quantize", "generator")}
    with pytest.raises(CheckpointError, match="missing key 'position_emb'"):
        load_codeformer({"params_ema": meta_state_dict(vqgan)})


def test_gfpgan_state_dict_is_refused():
    gfpgan = meta_state_dict({"conv_body_first.weight": (32, 3, 1, 1), "conv_body_down.0.conv1.weight": (64, 32, 3, 3),
                              "stylegan_decoder.style_mlp.1.weight": (512, 512)})
    with pytest.raises(CheckpointError, match="'conv_body_first.weight'"):
        load_codeformer({"params_ema": gfpgan})


def test_corrupt_or_truncated_file_is_refused(tmp_path, tiny_weights):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 100)
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_codeformer(garbage, TINY)
    whole = tmp_path / "whole.pth"
    torch.save({"params_ema": tiny_weights}, whole)
    truncated = tmp_path / CODEFORMER_FILE
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="codeformer.pth"):
        load_codeformer(truncated, TINY)
    with pytest.raises(CheckpointError):
        load_codeformer([1, 2, 3])


def test_bad_config_is_refused(tiny_weights):
    with pytest.raises(IdgenError, match="unknown key 'width'"):
        load_codeformer(tiny_weights, {**TINY, "width": 3})
    with pytest.raises(IdgenError, match="multiple of 32"):
        CodeFormer(**{**TINY, "nf": 48})
    with pytest.raises(IdgenError, match="latent_size"):
        CodeFormer(**{**TINY, "latent_size": 512})
    with pytest.raises(IdgenError, match="connect_list"):
        CodeFormer(**{**TINY, "connect_list": ["128"]})


# -- inputs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("w", [-0.1, 1.5, float("nan"), "high", True, None])
def test_w_out_of_range_is_refused(tiny_model, case_input, w):
    with pytest.raises(IdgenError, match="fidelity weight w"):
        tiny_model(case_input[:1], w=w)


@pytest.mark.parametrize("shape", [(1, 3, 64, 32), (1, 3, 32, 32), (1, 3, 128, 128), (1, 4, 64, 64), (3, 64, 64),
                                   (0, 3, 64, 64)])
def test_wrong_input_shape_is_refused(tiny_model, shape):
    with pytest.raises(IdgenError, match=r"\[B, 3, 64, 64\]"):
        tiny_model(torch.zeros(shape))


def test_wrong_input_type_is_refused(tiny_model, case_input):
    with pytest.raises(IdgenError, match="tensor"):
        tiny_model(case_input[:1].numpy())
    with pytest.raises(IdgenError, match="float64"):
        tiny_model(case_input[:1].double())
