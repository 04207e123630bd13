"""The provenance manifest: what made an output (operation, method, model hashes, parameters),
when, with which idgen, and the disclosure that it is AI-generated.

The manifest borrows C2PA's vocabulary (a `c2pa.actions` assertion whose action carries an IPTC
`digitalSourceType`) so tools that know C2PA or IPTC read it the same way, but it is not a signed
C2PA manifest: see `idgen.provenance.metadata` for why. Its `id`, 8 hex digits of the SHA-256 of
the canonical JSON, is the payload the invisible watermark carries, which ties pixels to manifest.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import PurePath
from typing import Any, Optional

from idgen.errors import IdgenError

#: Manifest format name and version, the `schema` field of every manifest.
SCHEMA = "idgen.provenance/1"
OPERATIONS = ("generate", "inpaint", "swap", "restore")
#: The human label every output carries.
LABEL = "AI-generated"
#: IPTC digital source types (https://cv.iptc.org/newscodes/digitalsourcetype/): a generated image
#: is trainedAlgorithmicMedia; an edit of a real photo or video is a composite with such media.
IPTC_GENERATED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
IPTC_COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
#: Characters of the manifest id: 8 hex digits = the watermark's 32-bit payload.
ID_HEX_DIGITS = 8


class ProvenanceError(IdgenError, ValueError):
    """A manifest is malformed (unknown operation, non-JSON parameters, bad JSON), or provenance
    cannot be written into or read from a file."""


def idgen_version() -> str:
    """idgen's installed version (`importlib.metadata`), else the package's `__version__`."""
    try:
        return importlib.metadata.version("idgen")
    except importlib.metadata.PackageNotFoundError:
        from idgen import __version__

        return __version__


def _default_generator() -> str:
    return f"idgen {idgen_version()}"


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _jsonable(value: Any, where: str) -> Any:
    """`value` as plain JSON types: numpy scalars and arrays become numbers and lists, paths
    strings, tuples lists. Raises ProvenanceError on NaN/inf or anything else."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ProvenanceError(f"manifest {where} is {value}; manifests are strict JSON (no NaN or inf).")
        return float(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy scalar or array
        return _jsonable(value.tolist(), where)
    raise ProvenanceError(f"manifest {where} is a {type(value).__name__}, which is not JSON; "
                          "pass numbers, strings, lists or dicts.")


@dataclass
class Provenance:
    """What made one output.

    Args:
        operation: "generate" | "inpaint" | "swap" | "restore".
        method: the method that ran, e.g. "instantid", "faceid", "arc2face", "pva", "gfpgan", "svfr".
        models: component name -> SHA-256 hex of its weights (`idgen.provenance.model_sha256`), or
            a description such as "embedded-default (random weights)".
        parameters: the settings that shaped the output (seed, steps, scales, prompt...): JSON
            types, numpy scalars or paths; NaN/inf are refused.
        face_swap: True when a person's face was replaced by another identity. None (default)
            means True for "swap" and False otherwise; False is refused for "swap".
        generator: "idgen <version>".
        created: creation time, UTC ISO 8601 ("2025-01-31T12:00:00Z").
    """

    operation: str
    method: str
    models: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    face_swap: Optional[bool] = None
    generator: str = field(default_factory=_default_generator)
    created: str = field(default_factory=_utc_now)

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ProvenanceError(f"manifest operation {self.operation!r} is not one of {', '.join(OPERATIONS)}.")
        if not isinstance(self.method, str) or not self.method:
            raise ProvenanceError(f"manifest method must be a non-empty string, got {self.method!r}.")
        if self.face_swap is None:
            self.face_swap = self.operation == "swap"
        if self.operation == "swap" and not self.face_swap:
            raise ProvenanceError("a swap output is a face swap: its manifest cannot say face_swap=False.")
        self.face_swap = bool(self.face_swap)
        for name in ("models", "parameters"):
            if not isinstance(getattr(self, name), dict):
                raise ProvenanceError(f"manifest {name} must be a dict, got {type(getattr(self, name)).__name__}.")
        self.models = {str(k): str(v) for k, v in self.models.items()}
        self.parameters = _jsonable(self.parameters, "parameters")

    @property
    def action(self) -> str:
        """The C2PA action: "c2pa.created" for a generation, "c2pa.edited" for an edit."""
        return "c2pa.created" if self.operation == "generate" else "c2pa.edited"

    @property
    def digital_source_type(self) -> str:
        """The IPTC digital source type URI (`IPTC_GENERATED` or `IPTC_COMPOSITE`)."""
        return IPTC_GENERATED if self.operation == "generate" else IPTC_COMPOSITE

    @property
    def label(self) -> str:
        return LABEL

    @property
    def description(self) -> str:
        """One human line: "AI-generated with idgen 0.1.0 (generate, instantid)" (+ face swap)."""
        swap = ", face swap" if self.face_swap else ""
        return f"{LABEL} with {self.generator} ({self.operation}, {self.method}{swap})"

    def _core(self) -> dict:
        """The fields the id covers; everything else in `to_dict` is derived from them."""
        return {"schema": SCHEMA, "operation": self.operation, "method": self.method, "models": self.models,
                "parameters": self.parameters, "face_swap": self.face_swap, "generator": self.generator,
                "created": self.created}

    @property
    def id(self) -> str:
        """8 hex digits of the SHA-256 of the canonical JSON of the core fields (the watermark
        payload)."""
        canonical = json.dumps(self._core(), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                               allow_nan=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:ID_HEX_DIGITS]

    def to_dict(self) -> dict:
        """The manifest as JSON types: the core fields plus `id`, `label`, `digital_source_type`
        and a C2PA-style `c2pa` block (claim generator, `c2pa.actions` assertion)."""
        version = self.generator.split(" ", 1)[-1]
        action = {"action": self.action, "digitalSourceType": self.digital_source_type,
                  "softwareAgent": {"name": "idgen", "version": version}, "when": self.created,
                  "parameters": {"description": self.description}}
        c2pa = {"claim_generator_info": [{"name": "idgen", "version": version}],
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}]}
        return {**self._core(), "id": self.id, "label": LABEL, "description": self.description,
                "digital_source_type": self.digital_source_type, "c2pa": c2pa}

    def to_json(self, indent: Optional[int] = None) -> str:
        """`to_dict` as strict JSON (UTF-8 text, no NaN)."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict) -> "Provenance":
        """The manifest of `to_dict` output. Derived fields (`id`, `c2pa`...) are recomputed, not
        read: compare `data["id"]` with the result's `id` to see whether the core was edited."""
        if not isinstance(data, dict):
            raise ProvenanceError(f"a manifest is a JSON object, got {type(data).__name__}.")
        if data.get("schema") != SCHEMA:
            raise ProvenanceError(f"manifest schema is {data.get('schema')!r}, expected {SCHEMA!r}.")
        missing = [k for k in ("operation", "method", "generator", "created") if k not in data]
        if missing:
            raise ProvenanceError(f"manifest lacks {', '.join(missing)}.")
        return cls(operation=data["operation"], method=data["method"], models=data.get("models", {}),
                   parameters=data.get("parameters", {}), face_swap=data.get("face_swap"),
                   generator=data["generator"], created=data["created"])

    @classmethod
    def from_json(cls, text: str) -> "Provenance":
        """Parse `to_json` output. Raises ProvenanceError on bad JSON or a malformed manifest."""
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, TypeError) as e:
            raise ProvenanceError(f"manifest is not valid JSON ({e}).") from None
        return cls.from_dict(data)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not strict JSON")
