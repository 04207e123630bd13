"""`idgen --help`, every subcommand's `--help` and `idgen doctor` answer without loading the heavy
libraries: run in a fresh interpreter, they leave torch, diffusers, transformers, gradio, cv2 and
onnxruntime out of `sys.modules`. (How long they take is for `bench/bench_startup.py` to measure.)"""

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "diffusers", "transformers", "gradio", "cv2", "onnxruntime")

# Runs each command in turn and reports, per command, the heavy modules it loaded first.
SCRIPT = """
import argparse, contextlib, io, json, sys

HEAVY = {heavy!r}


def heavy_modules():
    return {{m for m in sys.modules if m.split(".")[0] in HEAVY}}


def command_paths(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from command_paths(sub, prefix + (name,))


from idgen.app.cli import build_parser, main

loaded, codes, outputs = {{"import idgen.app.cli": sorted(heavy_modules())}}, {{}}, {{}}
runs = [["--help"], ["doctor"], ["doctor", "--json"]] + [[*path, "--help"] for path in command_paths(build_parser())]
for argv in runs:
    before, out = heavy_modules(), io.StringIO()
    with contextlib.redirect_stdout(out):
        codes[" ".join(argv)] = main(argv)
    outputs[" ".join(argv)] = out.getvalue()
    loaded[" ".join(argv)] = sorted(heavy_modules() - before)
print(json.dumps({{"loaded": loaded, "codes": codes, "outputs": outputs}}))
"""


@pytest.fixture(scope="module")
def startup(tmp_path_factory):
    """What the commands did in a fresh interpreter, on a fresh machine (nothing configured)."""
    root = tmp_path_factory.mktemp("startup")
    env = {"IDGEN_HOME": str(root / "idgen-home"), "HOME": str(root / "user-home"), "HF_HOME": str(root / "hf"),
           "HF_HUB_CACHE": str(root / "hf" / "hub"), "HF_HUB_OFFLINE": "1"}
    env.update((k, v) for k, v in os.environ.items() if k != "HOME" and not k.startswith(("IDGEN_", "HF_")))
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(heavy=HEAVY)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_command_is_reached(startup):
    codes = startup["codes"]
    assert {"--help", "doctor", "doctor --json", "generate --help", "inpaint --help", "swap --help", "restore --help",
            "eval restore --help", "demo --help", "prepare-data --help", "train lora --help", "train adapter --help",
            "train restore --help", "train svfr --help", "verify --help", "faces --help"} <= codes.keys()
    assert all(code == 0 for code in codes.values()), codes


def test_help_and_doctor_load_no_heavy_library(startup):
    loaded = {command: modules for command, modules in startup["loaded"].items() if modules}
    assert not loaded, f"these commands imported heavy libraries: {loaded}"


def test_doctor_says_torch_was_not_asked(startup):
    report = json.loads(startup["outputs"]["doctor --json"])
    assert report["device"] is None and report["accelerator"]["torch_initialised"] is False
    assert report["packages"]["torch"] and "models" in report
    assert "torch not initialised" in startup["outputs"]["doctor"] and "doctor --full" in startup["outputs"]["doctor"]
