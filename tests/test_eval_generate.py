"""`idgen eval generate` on the tiny embedded default: metrics.json / CSV / HTML, resuming, CLIP
score with a tiny local CLIP, the pair mode and InstantID's requested keypoints; the metrics on
real faces (a stored item whose "generated" images are the reference photos)."""

import csv
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from idgen.app.cli import EXIT_BAD_INPUT, EXIT_OK, main
from idgen.app.eval_generate import evaluate_generation
from idgen.app.eval_metrics import Scorer, diversity, summarise
from idgen.app.eval_plan import Item, load_identities, parse_method_spec, parse_methods, parse_seeds
from idgen.app.eval_report import IMAGE_COLUMNS, csv_cell
from idgen.validation import InvalidArgumentError


pytestmark = pytest.mark.usefixtures("empty_home")  # a fresh machine: nothing configured, no insightface pack


@pytest.fixture
def identities(faces_dir, tmp_path):
    root = tmp_path / "identities"
    for name in ("glasses", "smile"):
        (root / name).mkdir(parents=True)
        shutil.copy(faces_dir / f"portrait_{name}.jpg", root / name)
    return root


def _strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}: not valid JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _tiny_clip(folder):
    """A random CLIPModel with its tokenizer and image processor, saved like a downloaded one."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from idgen.testing import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer()
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=bos, eos_token_id=eos,
                         pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_method_specs_seeds_and_identities_parse(identities, tmp_path):
    spec = parse_method_spec("instantid:fast=lcm:weights=lcm.safetensors:scale=0.6:steps=4")
    assert (spec.method, spec.fast, spec.fast_weights, spec.identity_scale, spec.steps) == (
        "instantid", "lcm", "lcm.safetensors", 0.6, 4)
    assert spec.label == "instantid:fast=lcm:weights=lcm.safetensors:scale=0.6:steps=4" and ":" not in spec.slug
    assert [s.label for s in parse_methods("faceid, arc2face")] == ["faceid", "arc2face"]
    for bad, message in (("nope", "must be one of"), ("faceid:speed=2", "keys fast"), ("faceid:fast=lcm", "weights=PATH"),
                         ("arc2face:scale=1", "no identity scale"), ("faceid,faceid", "twice"), ("faceid:steps=0", "steps")):
        with pytest.raises(InvalidArgumentError, match=message):
            parse_methods(bad)
    assert parse_seeds("0, 3") == [0, 3]
    with pytest.raises(InvalidArgumentError):
        parse_seeds("1,1")
    assert [i.name for i in load_identities(identities)] == ["glasses", "smile"]
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(identities / "smile" / "portrait_smile.jpg", loose)
    assert [(i.name, len(i.photos)) for i in load_identities(loose)] == [("portrait_smile", 1)]


def test_eval_on_the_embedded_default_writes_reports_and_resumes(identities, tmp_path, monkeypatch, capsys):
    out, prompts = tmp_path / "eval", tmp_path / "prompts.txt"
    prompts.write_text("a photo of a person\n# a comment\n\na watercolor painting of a person\n")
    args = ["eval", "generate", "--identities", str(identities), "--methods", "faceid,arc2face", "--prompts",
            str(prompts), "--seeds", "0", "--steps", "2", "--tiny", "--out", str(out)]
    assert main(args) == EXIT_OK, capsys.readouterr().err
    assert "eval generate" in capsys.readouterr().err  # the progress bar
    report = _strict_json(out / "metrics.json")
    # 2 identities x (faceid: 2 prompts + arc2face: its identity prompt, once) x 1 seed
    assert report["items"] == report["generated"] == 6 and report["reused"] == report["failed"] == 0
    assert set(report["summary"]) == {"faceid", "arc2face"} and len(report["images"]) == 6
    for label, summary in report["summary"].items():  # noise images: no face, nothing faked
        assert summary["images"] == {"faceid": 4, "arc2face": 2}[label] and summary["detection_rate"] == 0.0
        assert summary["similarity_dlib"] is None and "no face" in summary["not_measured"]["similarity_dlib"]
        assert summary["clip_score"] is None and summary["not_measured"]["clip_score"]
        assert summary["similarity_arcface"] is None and "insightface" in summary["not_measured"]["similarity_arcface"]
        assert summary["seconds_per_image"] > 0 and summary["peak_memory_mib"] is not None
    assert any("CLIP score) not measured" in note for note in report["notes"])
    assert report["summary"]["arc2face"]["not_measured"]["clip_score"] == "arc2face takes no text prompt"

    with (out / "metrics.csv").open(newline="") as f:
        lines = list(csv.DictReader(f))
    assert [list(line) for line in lines[:1]] == [list(IMAGE_COLUMNS)]
    assert [dict(line) for line in lines] == [{c: csv_cell(r[c]) for c in IMAGE_COLUMNS} for r in report["images"]]
    page = (out / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 6 + 2  # the images, and each identity's reference photo
    assert all((out / src).is_file() for src in sources) and page.count("<svg") == 2

    # resumed with a CLIP model: nothing is generated again, only CLIP is measured
    images = sorted(out.rglob("*.png"))
    stamps = [p.stat().st_mtime_ns for p in images]

    def refuse(*a, **k):
        raise AssertionError("a resumed run generated again")

    monkeypatch.setattr("idgen.app.generate.generate", refuse)
    monkeypatch.setattr("idgen.models.recipes.build_generation_pipeline", refuse)
    clip = _tiny_clip(tmp_path / "clip")
    assert main(args + ["--clip", str(clip)]) == EXIT_OK, capsys.readouterr().err
    report = _strict_json(out / "metrics.json")
    assert report["generated"] == 0 and report["reused"] == 6 and report["clip"] == str(clip)
    assert [p.stat().st_mtime_ns for p in sorted(out.rglob("*.png"))] == stamps
    scores = [r["clip_score"] for r in report["images"] if r["base_method"] == "faceid"]
    assert len(scores) == 4 and all(isinstance(s, float) and 0 <= s <= 100 for s in scores)
    assert report["summary"]["faceid"]["clip_score"] is not None and report["summary"]["arc2face"]["clip_score"] is None
    assert all(r["reused"] for r in report["images"])

    assert main(args[:-2] + ["--out", str(out), "--clip", str(tmp_path / "none")]) != EXIT_OK
    assert main(["eval", "generate", "--identities", str(identities), "--methods", "faceid:fast=lcm", "--tiny",
                 "--out", str(tmp_path / "x")]) == EXIT_BAD_INPUT
    assert "weights=PATH" in capsys.readouterr().err


def test_pairs_and_instantid_keypoints(identities, tmp_path):
    out = tmp_path / "pairs"
    report = evaluate_generation(identities, out, methods=["instantid", "arc2face"], prompts=["a photo of a person"],
                                 seeds=[0], steps=2, embedded_default=True, pairs=True, progress=False)
    assert report["items"] == 3 + 2 and report["failed"] == 0  # instantid: 2 people + 1 pair; arc2face: 2 people
    pair = [r for r in report["images"] if r["people"] == 2]
    assert [r["identity"] for r in pair] == ["glasses+smile"] and pair[0]["leakage_dlib"] is None
    assert any("arc2face: one person per image" in n for n in report["notes"])
    assert report["summary"]["instantid"]["kps_error"] is None  # noise: no face to compare
    for folder in ("glasses", "glasses+smile"):
        item = json.loads(next((out / "images" / folder / "instantid").glob("*/item.json")).read_text())
        drawn = np.asarray(Image.open(out / item["conditions"]["keypoints"]).convert("RGB"))
        assert len(item["target_kps"]) == len(folder.split("+"))
        for kps in item["target_kps"]:  # the recomputed target is where the condition was drawn
            for x, y in kps:
                assert drawn[int(round(y)), int(round(x))].max() > 0
        if len(item["target_kps"]) == 2:
            width = drawn.shape[1]
            assert max(x for x, _ in item["target_kps"][0]) < width / 2 < min(x for x, _ in item["target_kps"][1])
    assert all((out / src).is_file() for src in re.findall(r'<img src="([^"]+)"', (out / "report.html").read_text()))


def test_metrics_on_real_faces(identities, tmp_path, dlib_analyzer):
    """The "generated" images are the reference photos themselves (and the two side by side)."""
    people = load_identities(identities)
    scorer = Scorer(people)
    glasses, smile = (np.asarray(Image.open(p.photos[0]).convert("RGB").resize((512, 512))) for p in people)
    out = tmp_path / "out"
    out.mkdir()
    Image.fromarray(glasses).save(out / "one.png")
    Image.fromarray(np.concatenate([glasses, smile], axis=1)).save(out / "pair.png")
    Image.fromarray(np.concatenate([smile, glasses], axis=1)).save(out / "swapped.png")
    spec = parse_method_spec("instantid")
    detected = dlib_analyzer.detect(glasses)[0].kps.tolist()

    (row,) = scorer.measure(Item((people[0],), spec, 0, None, 0), {"files": ["one.png"], "target_kps": [detected]}, out)
    assert row["detection"] == 1.0 and row["similarity_dlib"] > 0.98 and row["distance_dlib"] < 0.3
    assert row["kps_error"] < 1e-6 and row["leakage_dlib"] is None and row["clip_score"] is None
    (other,) = scorer.measure(Item((people[1],), spec, 0, None, 0), {"files": ["one.png"]}, out)
    assert other["distance_dlib"] > 0.6 and other["similarity_dlib"] < row["similarity_dlib"]

    pair = Item(tuple(people), spec, 0, None, 0)
    (right,) = scorer.measure(pair, {"files": ["pair.png"], "regions": ["left", "right"]}, out)
    (wrong,) = scorer.measure(pair, {"files": ["swapped.png"], "regions": ["left", "right"]}, out)
    assert right["detection"] == wrong["detection"] == 1.0
    assert right["leakage_dlib"] < 0 < wrong["leakage_dlib"], "each face is more like its own person"
    assert len(right["embeddings_dlib"]) == 2 and all(e is not None for e in right["embeddings_dlib"])
    assert diversity(right["embeddings_dlib"]) > 0.6 and diversity([right["embeddings_dlib"][0]] * 2) == 0

    rows = [{**r, "seconds_per_image": s, "peak_memory_mib": 10.0 * s, "memory_kind": "rss"}
            for r, s in ((row, 1.0), (other, 3.0))]
    summary = summarise(spec, rows, [{"diversity_dlib": 0.5}, {"diversity_dlib": None}],
                        {"arcface": "no pack", "clip": "no --clip"})
    assert summary["detection_rate"] == 1.0 and summary["similarity_dlib_n"] == 2
    assert summary["verification_rate_dlib"] == 0.5, "the same person, and the other one"
    assert summary["diversity_dlib"] == 0.5 and summary["seconds_per_image"] == 2.0 and summary["peak_memory_mib"] == 30.0
    assert summary["kps_error"] < 1e-6 and summary["not_measured"]["clip_score"] == "no --clip"
    assert "kps_error" not in summary["not_measured"] and summary["not_measured"]["similarity_arcface"] == "no pack"
