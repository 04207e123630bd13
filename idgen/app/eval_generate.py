"""`idgen eval generate`: compare generation methods on the same identities, prompts and seeds,
with numbers (PuLID's Table 1, PhotoMaker's FaceSim) and pictures.

The run is a plan of items, one `generate` call each: (identity, method spec, prompt, seed) with
`num_per_prompt` images. An item's images and `item.json` live in
`out/images/<identity>/<spec>/<prompt>-seed<S>/`; a later run with the same settings reuses them
(nothing is regenerated) and only measures again what changed (a `--clip` model given now).
One pipeline per method spec is built when its first missing item runs, and freed after its last.

The metrics are measured with recognisers independent of the methods: dlib's 128-d model always,
ArcFace (a local insightface pack) when present and reported apart, because the adapters are
conditioned on ArcFace embeddings. `metric_definitions` in `metrics.json` says how each is
computed; what could not be measured is `null` with the reason in `not_measured`.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path
from typing import Optional

from idgen import arguments
from idgen.app.eval_metrics import METRIC_DEFINITIONS, Scorer, diversity, round_metric, summarise
from idgen.app.eval_plan import (
    BUILTIN_PROMPTS, PAIR_REGIONS, Item, MethodSpec, item_config, load_identities, load_prompts, parse_method_spec,
    parse_methods, parse_seeds, plan_items, stored_item,
)
from idgen.app.records import finite_mean
from idgen.errors import IdgenError
from idgen.models.methods import CONTROL_METHODS, GENERATION_METHODS
from idgen.validation import check_seed

# ---------------------------------------------------------------------------------------- running
class MemoryMeter:
    """Peak memory of one call: `torch.cuda.max_memory_allocated` on CUDA, else the process's peak
    RSS during the call (reset through `/proc/self/clear_refs` where Linux allows it; else the peak
    since the process started) minus its RSS when the meter was made."""

    def __init__(self):
        import torch

        self.cuda = torch.cuda.is_available()
        self.kind = "cuda_max_memory_allocated" if self.cuda else "process_peak_rss_growth"
        self.baseline = 0 if self.cuda else _current_rss()

    def start(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS to the current RSS
        except OSError:
            pass  # not Linux, or not allowed: the peak since the process started

    def peak_mib(self) -> float:
        import torch

        if self.cuda:
            return round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
        return round(max(0, _peak_rss() - self.baseline) / 2 ** 20, 1)


def _peak_rss() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS: bytes, Linux: KiB


def _current_rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _peak_rss()


def _target_kps(record: dict, method: str) -> Optional[list]:
    """InstantID: the requested keypoints `[people][5][2]` at the output size, recomputed the way
    `generation_inputs._instantid` draws them (fitted into the output, or into each person's box)."""
    import numpy as np

    from idgen.app.people import Person, kps_in_box, place_people
    from idgen.conditioning import fit_kps

    if method not in CONTROL_METHODS:
        return None
    size = (record["width"], record["height"])
    people = record["people"]
    if len(people) == 1 and people[0]["box"] is None and people[0]["mask"] is None:
        source = record["pose_face"] or people[0]["faces"][0]
        return [fit_kps(np.asarray(source["kps"]), tuple(source["image_size"]), size).tolist()]
    placements = place_people([Person(p["photos"], box=p["box"], mask=p["mask"]) for p in people], size)
    return [kps_in_box(np.asarray(p["faces"][0]["kps"]), tuple(p["faces"][0]["image_size"]), pl.box).tolist()
            for p, pl in zip(people, placements)]


def _generate_item(item: Item, out: Path, pipeline, meter: MemoryMeter, *, num_images: int, steps: Optional[int],
                   embedded_default: Optional[bool], face_backend: Optional[str]) -> dict:
    """Run `generate` for `item` into its folder; returns what `item.json` keeps of it."""
    from idgen.app import generate as generation
    from idgen.app.people import Person

    spec = item.spec
    people = ([Person([str(p) for p in item.people[0].photos])] if len(item.people) == 1 else
              [Person([str(p) for p in person.photos], box=region) for person, region in zip(item.people, PAIR_REGIONS)])
    request = generation.GenerationRequest(
        method=spec.method, people=people, prompt=item.prompt or "photo of a person", seed=item.seed,
        steps=spec.steps or steps, num_images=num_images, identity_scale=spec.identity_scale,
        guidance_scale=spec.guidance_scale, fast=spec.fast, fast_weights=spec.fast_weights,
        embedded_default=embedded_default, face_backend=face_backend)
    meter.start()
    record = generation.generate(request, out / item.folder, pipeline=pipeline, overwrite=True)
    return {"files": [str(Path(f).relative_to(out)) for f in record["files"]],
            "conditions": {k: str(Path(v).relative_to(out)) for k, v in record["conditions"].items()},
            "seconds": record["seconds"], "seconds_per_image": round(record["seconds"] / num_images, 4),
            "peak_memory_mib": meter.peak_mib(), "memory_kind": meter.kind,
            "embedded_default": record["embedded_default"], "parameters": record["parameters"],
            "regions": [p["box"] for p in record["people"]] if len(item.people) > 1 else None,
            "target_kps": _target_kps(record, spec.method)}


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="image", desc="eval generate", disable=not enabled,
                file=sys.stderr, dynamic_ncols=True)


# -------------------------------------------------------------------------------------------- run
def evaluate_generation(identities_dir, out_dir, *, methods, prompts=None, seeds=(0,), num_per_prompt: int = 1,
                        steps: Optional[int] = None, clip=None, embedded_default: Optional[bool] = None,
                        pairs: bool = False, face_backend: Optional[str] = None, progress: bool = True) -> dict:
    """Generate (or reuse) every planned item, measure, and write `metrics.json`, `metrics.csv`
    and `report.html` to `out_dir`; returns the report (`metrics.json`'s content).

    `methods`: `MethodSpec`s or spec strings (`parse_method_spec`); `prompts`: a list of texts or
    None for `BUILTIN_PROMPTS`; `clip`: a local CLIPModel folder (prompt adherence) or None;
    `pairs`: also put identity i and i+1 left/right in one image (multi-person methods: leakage).
    """
    from idgen.app.eval_report import write_csv, write_html
    from idgen.app.records import write_json

    specs = [m if isinstance(m, MethodSpec) else parse_method_spec(m) for m in methods]
    identities = load_identities(identities_dir)
    prompts = list(BUILTIN_PROMPTS if prompts is None else prompts)
    seeds = [check_seed("seed", s) for s in seeds]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items, notes = plan_items(identities, specs, prompts, seeds, pairs=pairs)
    configs = [item_config(item, num_per_prompt, steps, embedded_default, face_backend) for item in items]
    stored = [stored_item(out, item, config) for item, config in zip(items, configs)]
    scorer = Scorer(identities, clip)
    notes += scorer.notes
    generated = _run_missing(items, configs, stored, out, num_images=num_per_prompt, steps=steps,
                             embedded_default=embedded_default, face_backend=face_backend, progress=progress,
                             notes=notes)

    rows, groups = [], {}
    for item, entry in zip(items, stored):
        if entry is None:
            continue  # failed: in the notes
        if entry.get("metrics_key") != scorer.key:
            entry.update(metrics=scorer.measure(item, entry, out), metrics_key=scorer.key)
            write_json(out / item.folder / "item.json", entry)
        for file, metrics in zip(entry["files"], entry["metrics"]):
            embeddings = metrics.pop("embeddings_dlib")  # per person: its face's, or None
            groups.setdefault((item.identity, item.spec.label, item.prompt_index), []).append(embeddings)
            rows.append({"identity": item.identity, "method": item.spec.label, "base_method": item.spec.method,
                         "people": len(item.people), "prompt_index": item.prompt_index, "prompt": item.prompt,
                         "seed": item.seed, "file": file, **metrics, "seconds_per_image": entry["seconds_per_image"],
                         "peak_memory_mib": entry["peak_memory_mib"], "memory_kind": entry["memory_kind"],
                         "reused": item not in generated})
    group_rows = [{"identity": identity, "method": label, "prompt_index": prompt, "images": len(faces),
                   "diversity_dlib": round_metric(finite_mean(diversity([f[k] for f in faces if f[k] is not None])
                                                  for k in range(len(faces[0]))))}
                  for (identity, label, prompt), faces in groups.items()]
    scorer_notes = {"arcface": None if "arcface" in scorer.analyzers else "no insightface pack is installed",
                    "clip": None if scorer.clip else "no --clip model given"}
    summary = {spec.label: summarise(spec, [r for r in rows if r["method"] == spec.label],
                                     [g for g in group_rows if g["method"] == spec.label], scorer_notes)
               for spec in specs}
    report = {
        "command": "eval generate", "identities": [{"name": i.name, "photos": [str(p) for p in i.photos],
                                                    "references_dlib": len(scorer.references["dlib"][i.name])}
                                                   for i in identities],
        "methods": [s.to_dict() for s in specs], "prompts": prompts, "seeds": seeds, "num_per_prompt": num_per_prompt,
        "steps": steps, "pairs": pairs, "embedded_default": any(e.get("embedded_default") for e in stored if e),
        "recognizers": {"dlib": "dlib_face_recognition_resnet_model_v1 (128-d)",
                        "arcface": scorer.analyzers["arcface"].embedding_model if "arcface" in scorer.analyzers else None},
        "clip": scorer.clip.path if scorer.clip else None,
        "items": len(items), "generated": len(generated), "reused": sum(e is not None for e in stored) - len(generated),
        "failed": sum(e is None for e in stored),
        "summary": summary, "groups": group_rows, "images": rows, "metric_definitions": METRIC_DEFINITIONS,
        "notes": notes, "files": {"metrics": "metrics.json", "csv": "metrics.csv", "html": "report.html"},
    }
    write_json(out / "metrics.json", report)
    write_csv(out / "metrics.csv", rows)
    write_html(out / "report.html", report)
    return report


def _run_missing(items: list[Item], configs: list[dict], stored: list, out: Path, *, num_images: int,
                 progress: bool, notes: list, **options) -> set:
    """Generate the items without a stored result (filling `stored` in place); returns them.
    One pipeline per spec, built for its first missing item and freed after its last."""
    import torch

    from idgen.app.records import write_json
    from idgen.models.recipes import build_generation_pipeline

    missing = [i for i, entry in enumerate(stored) if entry is None]
    bar = _progress(len(items) * num_images, (len(items) - len(missing)) * num_images, progress)
    generated, pipeline, built_for = set(), None, None
    meter = MemoryMeter()
    try:
        for i in missing:
            item = items[i]
            bar.set_postfix_str(f"{item.identity} | {item.spec.label} | seed {item.seed}", refresh=False)
            if built_for != item.spec:
                pipeline = None
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                pipeline = build_generation_pipeline(item.spec.method, embedded_default=options["embedded_default"])
                built_for = item.spec
            try:
                entry = _generate_item(item, out, pipeline, meter, num_images=num_images, **options)
            except IdgenError as e:
                notes.append(f"{item.identity} | {item.spec.label} | prompt {item.prompt_index} | seed {item.seed}: "
                             f"failed: {e}")
            else:
                stored[i] = {"config": configs[i], **entry}
                write_json(out / item.folder / "item.json", stored[i])
                generated.add(item)
            bar.update(num_images)
    finally:
        bar.close()
    return generated


# -------------------------------------------------------------------------------------------- CLI
def _cmd_eval_generate(args: argparse.Namespace) -> int:
    report = evaluate_generation(args.identities, args.out, methods=parse_methods(args.methods),
                                 prompts=load_prompts(args.prompts), seeds=parse_seeds(args.seeds),
                                 num_per_prompt=args.num_per_prompt, steps=args.steps, clip=args.clip,
                                 embedded_default=True if args.tiny else None, pairs=args.pairs,
                                 face_backend=args.backend)
    columns = ("images", "detection_rate", "similarity_dlib", "similarity_arcface", "kps_error", "leakage_dlib",
               "clip_score", "diversity_dlib", "seconds_per_image", "peak_memory_mib")
    print(json.dumps({label: {k: s[k] for k in columns} for label, s in report["summary"].items()}, indent=2))
    for note in report["notes"]:
        print(f"note: {note}", file=sys.stderr)
    out = Path(args.out)
    print(f"generated {report['generated']}, reused {report['reused']}, failed {report['failed']} items")
    print(f"metrics: {out / 'metrics.json'}  csv: {out / 'metrics.csv'}  report: {out / 'report.html'}")
    return 0


def add_eval_generate_parser(kinds) -> None:
    """Register `idgen eval generate` in the `idgen eval` group `kinds`."""
    eg = kinds.add_parser("generate", help="compare generation methods on the same identities, prompts and seeds: "
                                           "identity similarity, detection, keypoints, leakage, CLIP, diversity, speed")
    eg.add_argument("--identities", required=True, metavar="DIR",
                    help="one subfolder per identity with its photos (or a folder of photos, one identity each)")
    eg.add_argument("--methods", required=True, metavar="SPEC[,SPEC...]",
                    help="comma-separated METHOD[:key=value...], keys fast, weights, scale, steps, cfg; e.g. "
                         "faceid,arc2face,instantid:scale=0.6,instantid:fast=lcm:weights=lcm.safetensors "
                         f"(methods: {', '.join(GENERATION_METHODS)})")
    eg.add_argument("--prompts", metavar="FILE", default=None,
                    help=f"one prompt a line (default: a built-in set of {len(BUILTIN_PROMPTS)})")
    eg.add_argument("--seeds", default="0", metavar="S[,S...]", help="comma-separated seeds (default 0)")
    eg.add_argument("--num-per-prompt", type=arguments.integer(1, 16), default=1, metavar="N",
                    help="images per prompt and seed")
    eg.add_argument("--steps", type=arguments.steps, default=None, help="denoising steps (default: each method's)")
    eg.add_argument("--clip", metavar="PATH", default=None,
                    help="a local transformers CLIPModel folder for prompt adherence (else: not measured)")
    eg.add_argument("--pairs", action="store_true",
                    help="also put identity i and i+1 left/right in one image (multi-person methods): leakage")
    eg.add_argument("--backend", choices=["dlib", "insightface"], default=None,
                    help="the face backend the methods take their identity from (the metrics always use dlib, "
                         "and ArcFace when a pack is installed)")
    eg.add_argument("--out", default="outputs/eval-generate", metavar="DIR")
    eg.add_argument("--tiny", action="store_true", help="force the tiny embedded default (random weights)")
    eg.set_defaults(func=_cmd_eval_generate)
