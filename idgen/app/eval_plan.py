"""What `idgen eval generate` runs: the method specs (`METHOD[:key=value]`), the identities (one
folder of photos each), the prompts, and the plan of items (identity, method spec, prompt, seed),
each with its output folder."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from idgen.acceleration.options import FAST_PRESET_NAMES
from idgen.errors import DatasetError
from idgen.models.methods import GENERATION_METHODS, MULTI_PERSON_METHODS
from idgen.validation import InvalidArgumentError, check_scale, check_seed, check_steps

#: The prompts compared when no `--prompts` file is given: plain, close-up, accessory, scene, style.
BUILTIN_PROMPTS = (
    "a photo of a person",
    "a close-up portrait photo of a person, studio lighting",
    "a photo of a person wearing a red hat, in a park",
    "a person as an astronaut on the moon, cinematic",
    "a watercolor painting of a person",
)
#: The `METHOD:key=value` keys of a method spec and the `GenerationRequest` field each sets.
SPEC_KEYS = {"fast": "fast", "weights": "fast_weights", "scale": "identity_scale", "steps": "steps",
             "cfg": "guidance_scale"}
#: Where the pair mode puts identity i and i+1.
PAIR_REGIONS = ("left", "right")


# ----------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class MethodSpec:
    """One compared configuration: a `generate` method with an optional few-step preset (`fast`
    and its `fast_weights`), identity scale, steps and CFG. `label` is how the report names it."""

    method: str
    fast: Optional[str] = None
    fast_weights: Optional[str] = None
    identity_scale: Optional[float] = None
    steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    label: str = ""

    @property
    def slug(self) -> str:
        return _slug(self.label.replace("=", "-").replace(":", "_"))

    def to_dict(self) -> dict:
        return asdict(self)


def parse_method_spec(text: str) -> MethodSpec:
    """`METHOD[:key=value...]` -> `MethodSpec`; keys: fast (lcm, lightning, hyper-sd, tcd), weights
    (the preset's file), scale (identity scale), steps, cfg. E.g. `instantid:fast=lcm:weights=lcm.safetensors`.

    Raises:
        InvalidArgumentError: naming the unknown method or key, or the bad value.
    """
    method, *options = [part.strip() for part in text.strip().split(":")]
    if method not in GENERATION_METHODS:
        raise InvalidArgumentError(f"{text!r}: the method must be one of {', '.join(GENERATION_METHODS)}.")
    fields: dict = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in SPEC_KEYS or not value:
            raise InvalidArgumentError(f"{text!r}: options are key=value with keys {', '.join(SPEC_KEYS)}, got {option!r}.")
        fields[SPEC_KEYS[key]] = value
    if "fast" in fields and fields["fast"] not in FAST_PRESET_NAMES:
        raise InvalidArgumentError(f"{text!r}: fast must be one of {', '.join(FAST_PRESET_NAMES)}.")
    if ("fast" in fields) != ("fast_weights" in fields):
        raise InvalidArgumentError(f"{text!r}: a few-step preset needs its file: give fast=NAME and weights=PATH together.")
    for name, check in (("identity_scale", check_scale), ("guidance_scale", check_scale), ("steps", check_steps)):
        if name in fields:
            fields[name] = check(name, fields[name])
    if method == "arc2face" and "identity_scale" in fields:
        raise InvalidArgumentError(f"{text!r}: Arc2Face has no identity scale.")
    return MethodSpec(method=method, label=":".join([method, *options]), **fields)


def parse_methods(text: str) -> list[MethodSpec]:
    """Comma-separated method specs (`parse_method_spec`), each once."""
    specs = [parse_method_spec(part) for part in text.split(",") if part.strip()]
    if not specs:
        raise InvalidArgumentError("give at least one method to compare.")
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise InvalidArgumentError(f"a method spec is given twice: {','.join(labels)}.")
    return specs


def parse_seeds(text: str) -> list[int]:
    """`0,1,2` -> `[0, 1, 2]` (distinct seeds)."""
    seeds = [check_seed("seed", part.strip()) for part in str(text).split(",") if part.strip()]
    if not seeds or len(set(seeds)) != len(seeds):
        raise InvalidArgumentError(f"seeds are distinct comma-separated integers, got {text!r}.")
    return seeds


@dataclass(frozen=True)
class Identity:
    """One person: a name (the folder's) and reference photos."""

    name: str
    photos: tuple[Path, ...]


def load_identities(root) -> list[Identity]:
    """One identity per subfolder of `root` (its photos inside, recursively); a folder without
    subfolders: each photo in it is an identity of its own."""
    from idgen.image_io import IMAGE_SUFFIXES, list_photos

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"--identities {root}: not a folder (one subfolder of photos per identity).")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if folders:
        return [Identity(f.name, tuple(list_photos(f))) for f in folders]
    photos = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise DatasetError(f"--identities {root}: no identity subfolders and no photos.")
    return [Identity(p.stem, (p,)) for p in photos]


def load_prompts(path=None) -> list[str]:
    """The prompts of a text file (one a line; blank lines and `#` comments skipped), else `BUILTIN_PROMPTS`."""
    if path is None:
        return list(BUILTIN_PROMPTS)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DatasetError(f"--prompts {path}: {e.strerror or e}.") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise DatasetError(f"--prompts {path}: no prompts in it (one a line).")
    return prompts


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "_"


# ------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Item:
    """One `generate` call: its people (1, or 2 side by side in pair mode), spec, prompt and seed.
    `prompt_index` None: Arc2Face, whose prompt is its identity prompt (planned once per seed)."""

    people: tuple[Identity, ...]
    spec: MethodSpec
    prompt_index: Optional[int]
    prompt: Optional[str]
    seed: int

    @property
    def identity(self) -> str:
        return "+".join(p.name for p in self.people)

    @property
    def folder(self) -> Path:
        prompt = "identity-prompt" if self.prompt_index is None else f"prompt{self.prompt_index}"
        people = "+".join(_slug(p.name) for p in self.people)  # `_slug` keeps no "+": a pair's folder is its own
        return Path("images") / people / self.spec.slug / f"{prompt}-seed{self.seed}"


def plan_items(identities: Sequence[Identity], specs: Sequence[MethodSpec], prompts: Sequence[str],
               seeds: Sequence[int], *, pairs: bool = False) -> tuple[list[Item], list[str]]:
    """Every item, grouped by spec (one pipeline each), and notes on what was left out."""
    groups = [(p,) for p in identities]
    notes = []
    if pairs:
        if len(identities) < 2:
            notes.append("--pairs needs at least 2 identities: no pair images.")
        groups += [(a, b) for a, b in zip(identities, identities[1:])]
    items = []
    for spec in specs:
        skipped = spec.method not in MULTI_PERSON_METHODS
        if pairs and skipped:
            notes.append(f"{spec.label}: one person per image, so no --pairs images (leakage not measured).")
        prompt_list = [(None, None)] if spec.method == "arc2face" else list(enumerate(prompts))
        for people in groups:
            if len(people) > 1 and skipped:
                continue
            items += [Item(people, spec, k, text, seed) for k, text in prompt_list for seed in seeds]
    return items, notes


def item_config(item: Item, num_images: int, steps: Optional[int], embedded_default: Optional[bool],
                 face_backend: Optional[str]) -> dict:
    """What an item's images depend on: a stored item is reused only when this is unchanged."""
    return {"people": [[p.name, [ph.name for ph in p.photos]] for p in item.people], "method": item.spec.to_dict(),
            "prompt": item.prompt, "seed": item.seed, "num_images": num_images, "steps": item.spec.steps or steps,
            "embedded_default": embedded_default, "face_backend": face_backend}


def stored_item(out: Path, item: Item, config: dict) -> Optional[dict]:
    """The item's `item.json` when it matches `config` and all its images exist, else None."""
    path = out / item.folder / "item.json"
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if stored.get("config") != json.loads(json.dumps(config)):
        return None
    return stored if all((out / f).is_file() for f in stored.get("files", ())) and stored.get("files") else None


