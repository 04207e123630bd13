"""How `idgen eval generate` measures: recognisers independent of the methods (dlib's 128-d model
always; ArcFace from a local insightface pack, reported apart), a local CLIP for prompt adherence
when given, and the per-method summary. `METRIC_DEFINITIONS` says how each metric is computed."""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path
from typing import Optional, Sequence

from idgen.app.eval_plan import Identity, Item, MethodSpec
from idgen.app.records import finite_mean, finite_values
from idgen.errors import ModelNotFoundError
from idgen.models.methods import CONTROL_METHODS, MULTI_PERSON_METHODS

#: dlib's usual same-person threshold on the Euclidean distance of its 128-d embeddings.
DLIB_SAME_PERSON = 0.6
#: Bumped when a metric's definition changes: items measured under another version are measured again.
METRICS_VERSION = 1
METRIC_DEFINITIONS = {
    "detection": "fraction of the image's people whose face dlib's detector finds (in the person's region for "
                 "--pairs images); detection_rate is its mean",
    "similarity_dlib": "cosine similarity of the largest detected face's dlib 128-d embedding to each reference "
                       "photo's embedding, averaged over the references (PhotoMaker's FaceSim with an independent "
                       "recogniser); null when no face is found",
    "distance_dlib": "Euclidean distance of the raw dlib descriptors to the references, averaged (dlib's own "
                     f"metric); verification_rate_dlib is the fraction of found faces closer than {DLIB_SAME_PERSON}, "
                     "dlib's same-person threshold",
    "similarity_arcface": "as similarity_dlib with the insightface pack's ArcFace (the embedding the adapters are "
                          "conditioned on, so flattering to them: reported apart)",
    "kps_error": "InstantID: mean distance between the detected face's 5 keypoints and the requested ones (the "
                 "drawn IdentityNet condition), divided by the requested inter-ocular distance",
    "leakage_dlib": "--pairs images: for each person's face, its similarity to the other person's references minus "
                    "to its own (dlib); above 0: the face looks more like the other person",
    "clip_score": "100 * cosine of the CLIP image and prompt embeddings, clipped at 0 (torchmetrics' CLIPScore), "
                  "with the --clip model; null without one",
    "diversity_dlib": "mean pairwise distance_dlib between the faces of the images of one identity, method and "
                      "prompt across seeds (and images per prompt); higher is more varied",
    "seconds_per_image": "the pipeline call's wall time divided by the images it made (the first item of a method "
                         "includes its warm-up: see the median)",
    "peak_memory_mib": "CUDA: torch.cuda.max_memory_allocated during the call; CPU: the process's peak RSS during "
                       "the call minus its RSS when the eval started (models + activations)",
}



# ---------------------------------------------------------------------------------------- metrics
class ClipScorer:
    """CLIP score of images against their prompt with a local `transformers` CLIPModel folder
    (loaded with `local_files_only=True`: nothing is downloaded)."""

    def __init__(self, path):
        import torch
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        self.path = str(path)
        if not Path(path).is_dir():
            raise ModelNotFoundError(f"--clip {path}: not a folder; give a local CLIPModel folder (config.json, weights, "
                                     "tokenizer), e.g. openai/clip-vit-large-patch14 saved with save_pretrained.")
        try:
            self.model = CLIPModel.from_pretrained(path, local_files_only=True).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ModelNotFoundError(f"--clip {path}: not a local CLIPModel folder with its tokenizer ({e}).") from None
        try:
            self.processor = CLIPImageProcessor.from_pretrained(path, local_files_only=True)
        except OSError:  # no preprocessor_config.json: CLIP's own preprocessing at the model's size
            size = self.model.config.vision_config.image_size
            self.processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self.max_length = self.model.config.text_config.max_position_embeddings

    def __call__(self, images, prompt: str) -> list[float]:
        import torch

        def unit(features):  # transformers 5 returns an output whose pooler_output is the projection
            features = features if isinstance(features, torch.Tensor) else features.pooler_output
            return torch.nn.functional.normalize(features.float(), dim=-1)

        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"].to(self.device)
        text = self.tokenizer([prompt], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.no_grad():
            image_features = unit(self.model.get_image_features(pixel_values=pixels))
            text_features = unit(self.model.get_text_features(**{k: v.to(self.device) for k, v in text.items()}))
        scores = (100 * image_features @ text_features.T).squeeze(-1).clamp(min=0)
        return [round(float(s), 4) for s in scores]


def round_metric(value, digits: int = 6):
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


class Scorer:
    """The recognisers, the CLIP scorer and each identity's reference embeddings."""

    def __init__(self, identities: Sequence[Identity], clip=None):
        from idgen.face import get_face_analyzer

        self.analyzers = {"dlib": get_face_analyzer("dlib")}
        self.notes = []
        try:
            self.analyzers["arcface"] = get_face_analyzer("insightface")
        except ModelNotFoundError:
            self.notes.append("ArcFace similarity not measured: no insightface pack is installed (see `idgen doctor`).")
        self.clip = ClipScorer(clip) if clip is not None else None
        if self.clip is None:
            self.notes.append("prompt adherence (CLIP score) not measured: give --clip PATH, a local CLIPModel folder.")
        self.references = {name: {i.name: self._references(analyzer, i) for i in identities}
                           for name, analyzer in self.analyzers.items()}

    @property
    def key(self) -> dict:
        """What the stored metrics were measured with (measured again when it changes)."""
        return {"version": METRICS_VERSION, "recognizers": sorted(self.analyzers),
                "clip": self.clip.path if self.clip else None}

    def _references(self, analyzer, identity: Identity) -> list:
        from idgen.image_io import load_image

        embeddings = []
        for photo in identity.photos:
            faces = analyzer.detect(load_image(photo))
            if faces and faces[0].embedding is not None:
                embeddings.append(faces[0].embedding)
            else:
                self.notes.append(f"{analyzer.name}: no face in the reference {photo}; left out of "
                                  f"{identity.name}'s references.")
        return embeddings

    def measure(self, item: Item, stored: dict, out: Path) -> list[dict]:
        """Per-image metrics of a generated item (and each face's dlib embedding, for diversity)."""
        from idgen.image_io import load_image

        images = [load_image(out / f) for f in stored["files"]]
        clip = (self.clip(images, item.prompt) if self.clip is not None and item.prompt is not None
                else [None] * len(images))
        rows = []
        for index, (image, clip_score) in enumerate(zip(images, clip)):
            row = {"index": index, "clip_score": clip_score, "similarity_arcface": None, "leakage_arcface": None}
            for name, analyzer in self.analyzers.items():
                row.update(self._identity_metrics(name, analyzer.detect(image), item, stored, image.shape))
            rows.append(row)
        return rows

    def _identity_metrics(self, name: str, faces: list, item: Item, stored: dict, shape) -> dict:
        """One recogniser's similarity (and for dlib: detection, distance, keypoints, leakage)."""
        import numpy as np

        from idgen.app.people import box_pixels
        from idgen.face import identity_similarity

        height, width = shape[:2]
        regions = [box_pixels(r, (width, height)) for r in stored["regions"]] if stored.get("regions") else [None]
        own, other, distances, kps_errors, embeddings = [], [], [], [], []
        found = 0
        for k, (person, region) in enumerate(zip(item.people, regions)):
            face = next((f for f in faces if region is None or _centre_in(f.bbox, region)), None)
            if face is None or face.embedding is None:
                embeddings.append(None)
                continue
            found += 1
            embeddings.append(np.asarray(face.embedding).tolist())
            refs = self.references[name][person.name]
            if refs:
                own.append(np.mean([identity_similarity(face.embedding, r) for r in refs]))
                distances.append(np.mean([dlib_distance(face.embedding, r) for r in refs]))
            if len(item.people) > 1:
                others = [r for p in item.people if p is not person for r in self.references[name][p.name]]
                if refs and others:
                    other.append(np.mean([identity_similarity(face.embedding, r) for r in others]) - own[-1])
            if stored.get("target_kps") and name == "dlib":
                target = np.asarray(stored["target_kps"][k], dtype=np.float64)
                ocular = float(np.linalg.norm(target[0] - target[1]))
                if ocular > 0:
                    kps_errors.append(np.linalg.norm(face.kps - target, axis=1).mean() / ocular)
        metrics = {f"similarity_{name}": round_metric(finite_mean(own)), f"leakage_{name}": round_metric(finite_mean(other))}
        if name == "dlib":
            metrics.update(detection=round(found / len(item.people), 4), distance_dlib=round_metric(finite_mean(distances)),
                           kps_error=round_metric(finite_mean(kps_errors)), embeddings_dlib=embeddings)
        return metrics


def _centre_in(bbox, region) -> bool:
    x, y = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    return region[0] <= x < region[2] and region[1] <= y < region[3]


def dlib_distance(a, b) -> float:
    """Euclidean distance of two raw dlib descriptors (not normalised: dlib's 0.6 threshold is on these)."""
    import numpy as np

    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


def diversity(embeddings: list[list]) -> Optional[float]:
    if len(embeddings) < 2:
        return None
    return finite_mean([dlib_distance(a, b) for a, b in combinations(embeddings, 2)])


def _stats(values) -> dict:
    finite = sorted(finite_values(values))
    if not finite:
        return {"mean": None, "std": None, "median": None, "n": 0}
    mean = sum(finite) / len(finite)
    middle = len(finite) // 2
    median = finite[middle] if len(finite) % 2 else (finite[middle - 1] + finite[middle]) / 2
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))
    return {"mean": round_metric(mean), "std": round_metric(std), "median": round_metric(median), "n": len(finite)}


def summarise(spec: MethodSpec, rows: list[dict], groups: list[dict], scorer_notes: dict) -> dict:
    """The aggregate of one method spec over its images (`rows`) and diversity `groups`."""
    dlib = _stats(r["similarity_dlib"] for r in rows)
    arcface = _stats(r.get("similarity_arcface") for r in rows)
    distances = [r["distance_dlib"] for r in rows if r["distance_dlib"] is not None]
    seconds = _stats(r["seconds_per_image"] for r in rows)
    memory = [r["peak_memory_mib"] for r in rows if r["peak_memory_mib"] is not None]
    summary = {
        "label": spec.label, "method": spec.method, "fast": spec.fast, "identity_scale": spec.identity_scale,
        "images": len(rows), "detection_rate": round_metric(finite_mean(r["detection"] for r in rows)),
        "similarity_dlib": dlib["mean"], "similarity_dlib_std": dlib["std"], "similarity_dlib_n": dlib["n"],
        "distance_dlib": round_metric(finite_mean(distances)),
        "verification_rate_dlib": round_metric(sum(d < DLIB_SAME_PERSON for d in distances) / len(distances)) if distances else None,
        "similarity_arcface": arcface["mean"], "similarity_arcface_std": arcface["std"],
        "kps_error": round_metric(finite_mean(r["kps_error"] for r in rows)),
        "leakage_dlib": round_metric(finite_mean(r["leakage_dlib"] for r in rows)),
        "leakage_arcface": round_metric(finite_mean(r.get("leakage_arcface") for r in rows)),
        "clip_score": round_metric(finite_mean(r["clip_score"] for r in rows)),
        "diversity_dlib": round_metric(finite_mean(g["diversity_dlib"] for g in groups)),
        "seconds_per_image": seconds["mean"], "seconds_per_image_median": seconds["median"],
        "peak_memory_mib": max(memory) if memory else None,
        "memory_kind": next((r["memory_kind"] for r in rows if r.get("memory_kind")), None),
    }
    reasons = {"similarity_dlib": "no face was found in any image" if rows else "no images",
               "similarity_arcface": scorer_notes.get("arcface") or "no face was found in any image",
               "kps_error": (f"{spec.method} is not conditioned on keypoints" if spec.method not in CONTROL_METHODS
                             else "no face was found in any image"),
               "leakage_dlib": ("only --pairs images have two people" if spec.method in MULTI_PERSON_METHODS
                                else f"{spec.method} makes one person an image"),
               "clip_score": ("arc2face takes no text prompt" if spec.method == "arc2face"
                              else scorer_notes.get("clip") or "not measured"),
               "diversity_dlib": "fewer than 2 faces found per identity, method and prompt (add seeds)"}
    summary["not_measured"] = {k: reason for k, reason in reasons.items() if summary[k] is None}
    return summary


