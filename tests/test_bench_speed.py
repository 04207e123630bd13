"""bench/bench_speed.py end to end at tiny size on CPU: one step of the InstantID workload, default
and fast cases; results.json is strict JSON with the documented keys, speed.png a real PNG."""

import json
import math
from pathlib import Path

from PIL import Image

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _strict(text: str):
    """json.loads that refuses NaN / Infinity (Python's json accepts them by default)."""
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_tiny_cpu_run_writes_strict_json_and_a_png(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the script imports bench_pipelines beside it
    import bench_speed

    code = bench_speed.main(["--size", "tiny", "--device", "cpu", "--steps", "1", "--repeats", "1",
                             "--workloads", "instantid-sdxl", "--cases", "idgen-default", "idgen-fast",
                             "--out", str(tmp_path)])
    assert code == 0
    report = _strict((tmp_path / "results.json").read_text())
    assert {"device", "versions", "date", "git_commit", "settings", "notes", "workloads", "results", "targets"} <= set(report)
    assert report["device"]["type"] == "cpu" and report["device"]["peak_bf16_dense_flops"] is None
    assert {"torch", "diffusers"} <= set(report["versions"])
    assert report["workloads"]["instantid-sdxl"]["steps"] == 1
    rows = {row["case"]: row for row in report["results"]}
    assert set(rows) == {"idgen-default", "idgen-fast"}
    for row in rows.values():
        assert row["status"] == "ok", row["note"]
        assert {"workload", "case", "status", "note", *bench_speed.ROW_KEYS} <= set(row)
        assert row["s_per_image"] > 0 and math.isfinite(row["s_per_image"]) and row["it_per_s"] > 0
        assert row["peak_memory_gb"] is None and row["flops_fraction_of_peak"] is None  # CPU: n/a
        assert row["speedup_vs_official"] is None and row["tflops_per_s"] > 0
    assert rows["idgen-default"]["denoiser_flops_per_step"] > 0 and rows["idgen-default"]["speedup_vs_default"] == 1.0
    assert rows["idgen-fast"]["acceleration"]["fused_attention"] > 0
    assert {t["target"] for t in report["targets"]} == {t.text for t in bench_speed.TARGETS}
    with Image.open(tmp_path / "speed.png") as image:
        assert image.format == "PNG" and image.width > 0
        image.verify()
