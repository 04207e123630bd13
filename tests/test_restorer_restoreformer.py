"""RestoreFormer++: parity with the official `VQVAEGANMultiHeadTransformer` (tests/data/parity/
restoreformer/, made by bench/parity/restoreformer.py on seeded tiny weights), the released layout
(tests/data/layouts/restoreformer.json, meta tensors) loading unchanged, and the loader's errors."""

import collections
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from idgen.errors import CheckpointError, IdgenError, ModelNotFoundError
from idgen.testing.restorers import RESTOREFORMER_WEIGHT_RECIPE as WEIGHT_RECIPE, seeded_state_dict
from idgen.restorers.restoreformer import (RESTOREFORMER_CONFIG, RESTOREFORMER_PP_CONFIG, RESTOREFORMER_PP_FILE,
                                           RestoreFormerPP, load_restoreformer, restoreformer_state_shapes)

DATA = Path(__file__).parent / "data"
CASE_DIR = DATA / "parity" / "restoreformer"
CASE = json.loads((CASE_DIR / "case.json").read_text())


def tiny_config(version="restoreformer_pp"):
    extra = {k: CASE["versions"][version][k] for k in ("head_size", "ex_multi_scale_num")}
    return {**{k: tuple(v) if isinstance(v, list) else v for k, v in CASE["config"].items()}, **extra}


def tiny_checkpoint(version="restoreformer_pp"):
    """The tiny weights as the released file wraps them: Lightning `state_dict`, `vqvae.` prefix,
    training-only `loss.*` entries beside them."""
    weights = seeded_state_dict(restoreformer_state_shapes(tiny_config(version)), CASE["weight_seed"], **WEIGHT_RECIPE)
    return {"state_dict": {**{"vqvae." + k: v for k, v in weights.items()},
                           "loss.discriminator.main.0.weight": torch.zeros(4, 3, 4, 4)},
            "epoch": 7, "global_step": 1000, "pytorch-lightning_version": "1.0.8"}


def fake_class(monkeypatch, qualified):
    """A class named `qualified` (its module and parents in sys.modules while the test pickles it)."""
    module_name, _, class_name = qualified.rpartition(".")
    parts = module_name.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    cls = type(class_name, (), {"__module__": module_name})
    setattr(sys.modules[module_name], class_name, cls)
    return cls


def forget_modules(monkeypatch, qualified):
    parts = qualified.split(".")[:-1]
    for i in range(1, len(parts) + 1):
        monkeypatch.delitem(sys.modules, ".".join(parts[:i]))


def layout():
    return {k: tuple(v) for k, v in json.loads((DATA / "layouts" / "restoreformer.json").read_text())["keys"].items()}


@pytest.mark.parametrize("version", ["restoreformer_pp", "restoreformer_v1"])
def test_matches_official(version):
    model = load_restoreformer(tiny_checkpoint(version), config=tiny_config(version))
    x = torch.from_numpy(np.load(CASE_DIR / "input.npy"))
    expected = torch.from_numpy(np.load(CASE_DIR / CASE["versions"][version]["output"]))
    with torch.no_grad():
        raw = model(x, clamp=False)
        out = model(x)
    assert (raw - expected).abs().max() <= 1e-4
    assert torch.equal(out, raw.clamp(-1, 1))  # the official inference's tensor2img(min_max=(-1, 1))
    assert out.dtype == torch.float32 and not model.training


def test_lightning_checkpoint_file_loads(tmp_path, monkeypatch):
    """A file laid out as Lightning 1.0 writes it (callbacks keyed by the ModelCheckpoint class,
    MultiStepLR milestones as a Counter) loads weights-only; the class is never imported."""
    name = "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"
    ModelCheckpoint = fake_class(monkeypatch, name)
    ckpt = tiny_checkpoint()
    ckpt["callbacks"] = {ModelCheckpoint: {"monitor": None, "best_model_score": torch.tensor(0.5),
                                           "best_model_path": "/logs/last.ckpt"}}
    ckpt["lr_schedulers"] = [{"milestones": collections.Counter({4000000: 1}), "gamma": 0.1, "last_epoch": 7}]
    path = tmp_path / RESTOREFORMER_PP_FILE
    torch.save(ckpt, path)
    forget_modules(monkeypatch, name)
    model = load_restoreformer(path, config=tiny_config())
    assert torch.equal(model.quantize.embedding.weight, ckpt["state_dict"]["vqvae.quantize.embedding.weight"])


def test_safetensors_state_dict_loads(tmp_path):
    weights = seeded_state_dict(restoreformer_state_shapes(tiny_config()), 3, **WEIGHT_RECIPE)
    save_file({k: v.half() for k, v in weights.items()}, tmp_path / "rfpp.safetensors")
    model = load_restoreformer(tmp_path / "rfpp.safetensors", config=tiny_config())
    assert model.decoder.conv_out.weight.dtype == torch.float32


def test_released_layout_loads_unchanged():
    keys = layout()
    assert all(k.startswith("vqvae.") for k in keys) and len(keys) == 441
    model = load_restoreformer({"state_dict": {k: torch.empty(s, device="meta") for k, s in keys.items()}})
    assert {"vqvae." + k: tuple(v.shape) for k, v in model.state_dict().items()} == keys
    assert model.decoder.mid.attn_1.head_size == 4 and len(model.decoder.up[4].attn) == 3
    assert model.quantize.embedding.weight.is_meta  # nothing allocated


def test_v1_layout_is_detected():
    keys = {k: s for k, s in layout().items() if not k.startswith("vqvae.decoder.up.4.attn.")}
    model = load_restoreformer({k: torch.empty(s, device="meta") for k, s in keys.items()})
    assert model.decoder.mid.attn_1.head_size == RESTOREFORMER_CONFIG["head_size"] == 8
    assert len(model.decoder.up[4].attn) == 0


def test_missing_file_names_it_and_where_to_get_it(tmp_path):
    path = tmp_path / RESTOREFORMER_PP_FILE
    with pytest.raises(ModelNotFoundError, match=r"RestoreFormer\+\+\.ckpt.*releases"):
        load_restoreformer(path)


def test_bad_keys_are_named():
    keys = layout()
    victim = "vqvae.decoder.up.4.attn.1.q.weight"
    meta = {k: torch.empty(s, device="meta") for k, s in keys.items()}
    with pytest.raises(CheckpointError, match="missing key 'decoder.up.4.attn.1.q.weight'"):
        load_restoreformer({k: v for k, v in meta.items() if k != victim}, config=RESTOREFORMER_PP_CONFIG)
    with pytest.raises(CheckpointError, match="'decoder.up.4.attn.1.q.weight' has shape"):
        load_restoreformer({**meta, victim: torch.empty(3, 3, device="meta")})
    with pytest.raises(CheckpointError, match="unexpected key 'extra.weight'"):
        load_restoreformer({**meta, "vqvae.extra.weight": torch.empty(3, device="meta")})
    with pytest.raises(CheckpointError, match="unexpected key 'other.weight'"):
        load_restoreformer({**meta, "other.weight": torch.empty(3, device="meta")})
    with pytest.raises(CheckpointError, match="not a string"):
        load_restoreformer({**meta, 3: torch.empty(3, device="meta")})


def test_corrupt_and_code_pickling_files_are_refused(tmp_path, monkeypatch):
    corrupt = tmp_path / RESTOREFORMER_PP_FILE
    corrupt.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read"):
        load_restoreformer(corrupt)
    name = "somepackage.hparams.Config"  # any other pickled class is refused, by name
    Config = fake_class(monkeypatch, name)
    torch.save({**tiny_checkpoint(), "hyper_parameters": Config()}, tmp_path / "code.ckpt")
    forget_modules(monkeypatch, name)
    with pytest.raises(CheckpointError, match=r"somepackage\.hparams\.Config.*weights-only"):
        load_restoreformer(tmp_path / "code.ckpt", config=tiny_config())


def test_wrong_input_is_a_clear_error():
    model = RestoreFormerPP(**tiny_config())
    for bad in (torch.zeros(1, 3, 64, 64), torch.zeros(3, 32, 32), torch.zeros(1, 4, 32, 32),
                torch.zeros(1, 3, 32, 32, dtype=torch.uint8), np.zeros((1, 3, 32, 32), np.float32)):
        with pytest.raises(IdgenError, match=r"expected a float tensor \[B, 3, 32, 32\]"):
            model(bad)


def test_impossible_config_is_refused():
    with pytest.raises(IdgenError, match="multiple of 32"):
        RestoreFormerPP(ch=16, ch_mult=(1, 2))
    with pytest.raises(IdgenError, match="unknown key 'depth'"):
        load_restoreformer({}, config={"depth": 3})
