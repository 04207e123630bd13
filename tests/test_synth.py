"""`idgen synth` on the tiny embedded default: identity sampling, the same samples (keys, ids, seeds,
bytes) from 1 and 2 processes (`accelerate launch --multi_gpu` on CPUs: gloo), resume after a killed run, the
output trains an adapter, and the similarity filter logs its rejects."""

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from idgen.app.cli import main
from idgen.errors import DatasetError
from idgen.face import Face
from idgen.train import synth
from idgen.train.records import open_dataset
from idgen.train.synth import SynthOptions, plan_item, sample_identities, shards_of_process, synthesize
from idgen.train.synth_cli import METHODS

REPO = Path(__file__).resolve().parents[1]
# 2 identities x 3 images in shards of 2: shard 1 holds the last image of identity 0 and the first of identity 1
ARGS = ["--identities", "2", "--images-per-identity", "3", "--method", "faceid", "--tiny", "--steps", "2",
        "--shard-size", "2", "--seed", "5", "--no-progress"]
OPTIONS = dict(identities=2, images_per_identity=3, method="faceid", tiny=True, steps=2, shard_size=2, seed=5)


@pytest.fixture()
def one_thread():
    """One torch thread, as each process of the 2-process run (`OMP_NUM_THREADS=1`): the same
    float reductions, so the same image bytes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def members(out: Path) -> dict:
    """`{shard/member: bytes}` of every shard of a synth output."""
    found = {}
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                found[f"{shard.name}/{member.name}"] = tar.extractfile(member).read()
    return found


def samples(out: Path) -> list:
    """`(key, identity, seed, image bytes)` of every record, from `open_dataset`."""
    data = open_dataset(out)
    rows = [data.metadata(i) for i in range(len(data))]
    pngs = {name.split("/")[1][:-4]: blob for name, blob in members(out).items() if name.endswith(".png")}
    return sorted((r["key"], r["identity"], r["seed"], pngs[r["key"]]) for r in rows)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The reference: one process, in this one."""
    out = tmp_path_factory.mktemp("synth") / "one"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = synthesize(out, SynthOptions(**OPTIONS), progress=False, device="cpu")
    finally:
        torch.set_num_threads(threads)
    return out, summary


def test_identity_sampling():
    a = sample_identities(64, min_distance=0.9, seed=3)
    np.testing.assert_array_equal(a, sample_identities(64, min_distance=0.9, seed=3))
    assert not np.array_equal(a, sample_identities(64, min_distance=0.9, seed=4))
    assert a.shape == (64, 512) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    cos = a @ a.T
    assert cos[~np.eye(64, dtype=bool)].max() <= 0.1 + 1e-6  # distance >= 0.9
    assert np.isclose(abs(a.mean(0)).max(), 0, atol=0.1)  # no preferred direction
    with pytest.raises(DatasetError, match="cannot all be at cosine distance"):
        sample_identities(3, min_distance=1.6)  # 3 unit vectors: cosine >= -1/2 for some pair
    with pytest.raises(DatasetError, match="placed only .* of 40 identities"):
        sample_identities(40, min_distance=1.0, dim=16, max_draws=2000)  # possible, but not by random draws


def test_plan_does_not_depend_on_the_process_count():
    options = SynthOptions(**{**OPTIONS, "images_per_identity": 5, "shard_size": 3, "method": "instantid"})
    for world in (1, 2, 3, 7):
        shards = sorted(k for p in range(world) for k in shards_of_process(options, p, world))
        assert shards == list(range(options.num_shards))
    items = [plan_item(options, i, 64) for i in range(options.num_items)]
    again = plan_item(options, 7, 64)
    assert (again.seed, again.template, again.pose) == (items[7].seed, items[7].template, items[7].pose)
    np.testing.assert_array_equal(again.kps, items[7].kps)
    assert [(i.identity, i.image) for i in items[:6]] == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0)]
    assert len({i.seed for i in items}) == len(items) and len({i.key for i in items}) == len(items)
    assert len({round(i.pose["roll_degrees"], 3) for i in items}) == len(items)  # InstantID: a pose each
    assert tuple(synth.SYNTH_METHODS) == METHODS
    with pytest.raises(DatasetError, match="need a photo"):
        SynthOptions(identities=1, images_per_identity=1, method="pulid")
    with pytest.raises(DatasetError, match='word "id" exactly once'):
        SynthOptions(identities=1, images_per_identity=1, method="arc2face", templates=["a photo of a person"])
    with pytest.raises(DatasetError, match="unknown placeholder"):
        SynthOptions(identities=1, images_per_identity=1, templates=["photo of a id {name}"])


def test_single_process_output(single):
    out, summary = single
    assert summary["count"] == 6 and summary["identities"] == 2 and summary["shards"] == [
        "shards/000000.tar", "shards/000001.tar", "shards/000002.tar"]
    data = open_dataset(out)
    assert len(data) == 6 and data.info["embedding_dim"] == 512
    record, meta = data[3], data.metadata(3)
    vectors = synth.load_file(str(out / "identities.safetensors"))["identities"]
    np.testing.assert_array_equal(record["embedding"], vectors[1])
    assert record["image"].size == (64, 64) and record["identity"] == "id0000001"
    assert (meta["identity_index"], meta["image_index"], meta["method"]) == (1, 0, "faceid")
    assert meta["seed"] == plan_item(SynthOptions(**OPTIONS), 3, 64).seed
    spec = json.loads((out / "synth.json").read_text())
    assert spec["options"]["identities"] == 2 and spec["identities"] == "identities.safetensors"


def test_two_processes_write_the_same_samples(single, tmp_path):
    out = tmp_path / "two"
    with socket.socket() as s:  # a free port: other test runs may use accelerate's default
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # `--multi_gpu` on CPUs: torchrun's 2 processes, gloo (`--cpu` would start one process)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    accelerate = Path(sys.executable).with_name("accelerate")
    done = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
                           "-m", "idgen.app.cli", "synth", "--out", str(out), *ARGS],
                          env=env, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    writers = {json.loads(p.read_text())["written_by"]["process"] for p in (out / "progress").glob("*.json")}
    assert writers == {0, 1}
    assert samples(out) == samples(single[0])
    assert members(out) == members(single[0])  # same shard boundaries, same bytes
    assert json.loads((out / "dataset.json").read_text()) == single[1]


def test_resume_after_a_killed_run(single, tmp_path, monkeypatch, one_thread):
    out = tmp_path / "killed"
    real_write, calls = synth.write_shard, []

    def killed_in_shard_1(path, records):
        calls.append(path.name)
        if len(calls) == 2:  # killed while writing shard 1: a partial .tmp is left
            path.with_name(path.name + ".tmp").write_bytes(b"half a tar")
            raise RuntimeError("killed")
        real_write(path, records)

    monkeypatch.setattr(synth, "write_shard", killed_in_shard_1)
    with pytest.raises(RuntimeError, match="killed"):
        synthesize(out, SynthOptions(**OPTIONS), progress=False, device="cpu")
    assert not (out / "dataset.json").exists() and (out / "shards" / "000001.tar.tmp").exists()
    assert sorted(p.name for p in (out / "progress").iterdir()) == ["000000.json"]
    monkeypatch.setattr(synth, "write_shard", real_write)

    with pytest.raises(DatasetError, match="--resume"):
        synthesize(out, SynthOptions(**OPTIONS), progress=False, device="cpu")
    with pytest.raises(DatasetError, match="other options.*steps=2"):
        synthesize(out, SynthOptions(**{**OPTIONS, "steps": 3}), resume=True, progress=False, device="cpu")

    generated = []
    real_image = synth.SynthGenerator.image
    def counted(self, item, vector):
        generated.append(item.key)
        return real_image(self, item, vector)

    monkeypatch.setattr(synth.SynthGenerator, "image", counted)
    summary = synthesize(out, SynthOptions(**OPTIONS), resume=True, progress=False, device="cpu")
    assert generated == ["id0000000_00002", "id0000001_00000", "id0000001_00001", "id0000001_00002"]  # shard 0 skipped
    keys = [open_dataset(out).metadata(i)["key"] for i in range(summary["count"])]
    assert len(keys) == len(set(keys)) == 6
    assert samples(out) == samples(single[0]) and members(out) == members(single[0])
    assert not list(out.rglob("*.tmp"))


def test_output_trains_an_adapter(single, tmp_path, capsys):
    out = tmp_path / "faceid"
    code = main(["train", "adapter", "--kind", "faceid", "--base", "tiny-sd15", "--data", str(single[0]),
                 "--output-dir", str(out), "--resolution", "32", "--lora-rank", "4", "--max-train-steps", "1",
                 "--train-batch-size", "2", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert (out / "ip-adapter-faceid.safetensors").is_file()


def test_cli_messages(single, tmp_path, capsys):
    assert main(["synth", "--out", str(single[0]), *ARGS]) == 3  # EXIT_BAD_INPUT
    assert "--resume" in capsys.readouterr().err
    impossible = ["--identities", "3", "--min-distance", "1.9"]  # the last --identities counts
    assert main(["synth", "--out", str(tmp_path / "x"), *ARGS, *impossible]) == 3  # EXIT_BAD_INPUT
    assert "cannot all be at cosine distance" in capsys.readouterr().err
    assert not (tmp_path / "x" / "dataset.json").exists()


def test_filter_rejects_noise_with_reasons(tmp_path, one_thread):
    out = tmp_path / "filtered"
    with pytest.raises(DatasetError, match="every one of the 6 generated images was rejected.*6 no face"):
        synthesize(out, SynthOptions(**OPTIONS, min_similarity=0.5, filter_backend="dlib"), progress=False, device="cpu")
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejected] == ["no face"] * 6
    assert {r["source"] for r in rejected} == {f"id000000{i}_0000{j}" for i in range(2) for j in range(3)}
    assert not (out / "dataset.json").exists()


class ToyAnalyzer:
    """A stand-in face model that knows the reference run's images by their pixels: no face in
    image 0 of identity 0 and image 1 of identity 1; identity 0's image 2 looks unlike its image 1,
    identity 1's image 2 like its image 0."""

    name, embedding_model, embedding_dim = "toy", "toy", 128

    def __init__(self, images: dict):
        rng = np.random.default_rng(0)
        a, b = rng.normal(size=128), rng.normal(size=128)
        embeddings = {"id0000000_00001": a, "id0000000_00002": -a, "id0000001_00000": b,
                      "id0000001_00002": b + 0.1 * rng.normal(size=128)}
        self.faces = {np.asarray(images[key]).tobytes(): vector.astype(np.float32) for key, vector in embeddings.items()}

    def detect(self, image):
        image = np.asarray(image)
        if image.tobytes() not in self.faces:
            return []
        return [Face(bbox=np.array([8, 8, 56, 56], np.float32), score=1.0, kps=synth.canonical_kps(64),
                     image_size=(64, 64), embedding=self.faces[image.tobytes()], embedding_model="toy")]


@pytest.fixture()
def images(single):
    data = open_dataset(single[0])
    return {data.metadata(i)["key"]: data[i]["image"] for i in range(len(data))}


def test_filter_reference_is_the_first_image_with_a_face(single, images, monkeypatch):
    options = SynthOptions(**OPTIONS)
    plan = lambda index: plan_item(options, index, 64)  # noqa: E731
    generated = []

    def generate(item, vector):
        generated.append(item.key)
        return images[item.key]

    monkeypatch.setattr("idgen.face.get_face_analyzer", lambda backend=None: ToyAnalyzer(images))
    vectors = synth.load_file(str(single[0] / "identities.safetensors"))["identities"]
    in_order = synth.IdentityFilter(0.5, None, vectors, generate, plan)
    verdicts = [in_order.check(plan(i), images[plan(i).key])[1:] for i in range(6)]
    assert generated == []  # every reference among the images already seen
    assert [v[1] for v in verdicts] == [
        "no face", None, "low similarity (-1.000 < 0.5, to the first image with a face)", None, "no face", None]
    assert verdicts[1][0] == pytest.approx(1.0) and 0.9 < verdicts[5][0] < 1.0
    # a process that starts at image 2 of identity 0 (its shard) regenerates the images before it
    fresh = synth.IdentityFilter(0.5, None, vectors, generate, plan)
    assert fresh.check(plan(2), images[plan(2).key])[1:] == verdicts[2]
    assert generated == ["id0000000_00000", "id0000000_00001"]


def test_filter_keeps_and_logs(single, images, tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr("idgen.face.get_face_analyzer", lambda backend=None: ToyAnalyzer(images))
    out = tmp_path / "toy"
    summary = synthesize(out, SynthOptions(**OPTIONS, min_similarity=0.5), progress=False, device="cpu")
    assert summary["count"] == 3 and summary["rejected_by_reason"] == {"no face": 2, "low similarity": 1}
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [(r["source"], r["reason"].split(" (")[0]) for r in rejected] == [
        ("id0000000_00000", "no face"), ("id0000000_00002", "low similarity"), ("id0000001_00001", "no face")]
    data = open_dataset(out)
    metas = [data.metadata(i) for i in range(len(data))]
    assert [m["key"] for m in metas] == ["id0000000_00001", "id0000001_00000", "id0000001_00002"]
    assert all(m["kps_source"] == "detected" and m["similarity"] >= 0.5 for m in metas)
    assert summary["shards"] == ["shards/000000.tar", "shards/000001.tar", "shards/000002.tar"]


def test_png_bytes_decode_to_the_records(single):
    """The tar members are what `records` reads: the PNG decodes to the record's image."""
    data = open_dataset(single[0])
    png = members(single[0])["000000.tar/id0000000_00000.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), np.asarray(data[0]["image"]))
