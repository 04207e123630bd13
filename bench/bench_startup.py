"""Start-up time of the `idgen` commands that answer without running a model: `idgen --help`,
every subcommand's `--help`, `idgen doctor` and `idgen doctor --json`.

    python bench/bench_startup.py                        # every such command, median of 5 runs
    python bench/bench_startup.py --runs 9 --json out.json
    python bench/bench_startup.py --commands "idgen --help" "idgen doctor --full"

Each run is a fresh Python process running what the `idgen` script runs (`idgen.app.cli:main`),
timed from spawn to exit; the table gives the median, min and max over `--runs` runs and marks
the commands whose median is above `--budget` seconds (1.5 by default: these commands must not
import torch, diffusers or the other heavy libraries; `tests/test_startup.py` checks that).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time

MAIN = "import sys; from idgen.app.cli import main; sys.exit(main())"  # the `idgen` console script


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every (sub)command of `parser`, as argument lists: ("doctor",), ("train", "lora"), ..."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += [prefix + (name,), *command_paths(sub, prefix + (name,))]
    return paths


def default_commands() -> list[list[str]]:
    from idgen.app.cli import build_parser

    return [["--help"], ["doctor"], ["doctor", "--json"]] + [[*path, "--help"] for path in command_paths(build_parser())]


def time_command(argv: list[str], runs: int) -> dict:
    seconds, codes = [], set()
    for _ in range(runs):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", MAIN, *argv], capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        codes.add(out.returncode)
    return {"command": shlex.join(["idgen", *argv]), "argv": argv, "runs": runs,
            "median_s": round(statistics.median(seconds), 3), "min_s": round(min(seconds), 3),
            "max_s": round(max(seconds), 3), "returncodes": sorted(codes)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command (the median is reported)")
    parser.add_argument("--commands", nargs="+", metavar="COMMAND",
                        help='idgen command lines to time, each quoted: "idgen doctor --json" (default: every '
                             "command's --help, and doctor)")
    parser.add_argument("--budget", type=float, default=1.5, help="seconds; slower medians are marked")
    parser.add_argument("--json", metavar="OUT", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.commands and not all(c.startswith("idgen ") for c in args.commands):
        parser.error('each of --commands is a whole command line: "idgen --help", "idgen doctor --json", ...')
    commands = [shlex.split(c)[1:] for c in args.commands] if args.commands else default_commands()
    rows = []
    print(f"{'command':40s} {'median s':>9s} {'min s':>7s} {'max s':>7s}  exit", flush=True)
    for command in commands:
        row = time_command(command, args.runs)
        row["over_budget"] = row["median_s"] > args.budget
        rows.append(row)
        print(f"{row['command']:40s} {row['median_s']:9.3f} {row['min_s']:7.3f} {row['max_s']:7.3f}  "
              f"{','.join(map(str, row['returncodes']))}{'  over budget' if row['over_budget'] else ''}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": sys.version.split()[0], "budget_s": args.budget, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
