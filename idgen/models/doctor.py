"""What `idgen doctor` reports: versions, device, and each known model present or missing."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Optional

from idgen.errors import ModelNotFoundError
from idgen.models.config import ModelConfig, env_var, load_config
from idgen.models.registry import REGISTRY
from idgen.models.resolve import resolve_component

PACKAGES = ("idgen", "torch", "diffusers", "transformers", "accelerate", "peft", "safetensors", "huggingface_hub",
            "insightface", "onnxruntime", "dlib-bin", "opencv-python-headless", "numpy", "gradio")


def _version(package: str) -> Optional[str]:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _device() -> str:
    import torch  # deferred: `idgen doctor` answers before torch loads its kernels

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def doctor_report(config: Optional[ModelConfig] = None) -> dict:
    """A JSON-ready report: `python`, `packages` (name -> version or None), `device`, `home`,
    and `models`: name -> {present, path, source} or {present: False, configured (the env var or
    config key and value that failed, or None), put_at, env, source, error}."""
    config = config or load_config()
    models = {}
    for name, component in REGISTRY.items():
        try:
            found = resolve_component(name, config=config)
            models[name] = {"present": True, "path": str(found.path), "source": found.source,
                            "description": component.description}
        except ModelNotFoundError as e:
            models[name] = {"present": False, "configured": config.configured_by(name), "description": component.description,
                            "put_at": str(config.home / component.default), "env": env_var(name),
                            "source": component.source, "error": str(e)}
    return {"python": platform.python_version(), "packages": {p: _version(p) for p in PACKAGES},
            "device": _device(), "home": str(config.home), "face_backend": config.face_backend, "models": models}


def format_doctor_report(report: dict) -> str:
    """Human-readable text of `doctor_report`."""
    lines = [f"python {report['python']}, device: {report['device']}", "packages:"]
    lines += [f"  {name:24s} {version or 'not installed'}" for name, version in report["packages"].items()]
    lines.append(f"models (IDGEN_HOME={report['home']}):")
    for name, info in report["models"].items():
        if info["present"]:
            lines.append(f"  [ok]      {name:24s} {info['path']} ({info['source']})")
        elif info["configured"]:
            lines.append(f"  [broken]  {name:24s} {info['error']}")
        else:
            lines.append(f"  [missing] {name:24s} put it at {info['put_at']} or set {info['env']}  (from {info['source']})")
    present = sum(info["present"] for info in report["models"].values())
    if present == 0:
        lines.append("No weights configured: `idgen generate` and the demo run on the tiny embedded default.")
    return "\n".join(lines)
