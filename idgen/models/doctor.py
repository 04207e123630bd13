"""What `idgen doctor` reports: versions, the accelerator, and each known model present or missing.

Nothing heavy is imported by default, so the report comes in well under a second: versions are
read from the installed packages' metadata, and the accelerator from the system (the NVIDIA
kernel driver in /proc/driver/nvidia/version, nvidia-smi on PATH); torch is not initialised, so
the device torch would use is not known then. `full=True` (`idgen doctor --full`) also imports
torch, which takes seconds, and reports the device it sees: CUDA and its GPU, MPS, else the CPU.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import shutil
from pathlib import Path
from typing import Optional

from idgen.errors import ModelNotFoundError
from idgen.models.config import ModelConfig, env_var, load_config
from idgen.models.registry import REGISTRY
from idgen.models.resolve import resolve_component

PACKAGES = ("idgen", "torch", "diffusers", "transformers", "accelerate", "peft", "safetensors", "huggingface_hub",
            "insightface", "onnxruntime", "dlib-bin", "opencv-python-headless", "numpy", "gradio")
#: What the NVIDIA kernel driver, when loaded, says of itself (Linux).
NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")


def _version(package: str) -> Optional[str]:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_driver() -> Optional[str]:
    """The loaded NVIDIA driver's version, "unknown" if its file does not say, None without one."""
    try:
        text = NVIDIA_DRIVER_FILE.read_text()
    except OSError:
        return None
    # "NVRM version: NVIDIA UNIX [Open ]Kernel Module [for x86_64]  550.54.15  ..."
    found = re.search(r"Kernel Module\b.*?\s(\d+\.\d+(?:\.\d+)*)\s", text)
    return found.group(1) if found else "unknown"


def _device() -> str:
    import torch  # lazy: only `full=True` pays torch's seconds of start-up

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def doctor_report(config: Optional[ModelConfig] = None, *, full: bool = False) -> dict:
    """A JSON-ready report: `python`, `packages` (name -> version or None), `device` (with `full`:
    torch's device, "cuda (<GPU name>)", "mps" or "cpu"; else None, torch is not imported),
    `accelerator` ({torch_initialised, nvidia_driver: version or None, nvidia_smi: path or None}),
    `home`, and `models`: name -> {present, path, source} or {present: False, configured (the env
    var or config key and value that failed, or None), put_at, env, source, error}."""
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
    accelerator = {"torch_initialised": full, "nvidia_driver": _nvidia_driver(), "nvidia_smi": shutil.which("nvidia-smi")}
    return {"python": platform.python_version(), "packages": {p: _version(p) for p in PACKAGES},
            "device": _device() if full else None, "accelerator": accelerator, "home": str(config.home),
            "face_backend": config.face_backend, "models": models}


def format_doctor_report(report: dict) -> str:
    """Human-readable text of `doctor_report`."""
    device = report["device"] or "not checked (torch not initialised; `idgen doctor --full` asks torch)"
    accelerator = report["accelerator"]
    smi = f"nvidia-smi: {accelerator['nvidia_smi']}" if accelerator["nvidia_smi"] else "no nvidia-smi on PATH"
    lines = [f"python {report['python']}, device: {device}",
             f"nvidia driver: {accelerator['nvidia_driver'] or 'none loaded'} ({smi})", "packages:"]
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
