"""`idgen demo`: start the Gradio demo."""

from __future__ import annotations

import argparse

from idgen import arguments


def _cmd_demo(args: argparse.Namespace) -> int:
    from idgen.app.demo.app import launch

    launch(args.host, args.port, tiny=True if args.tiny else None)
    return 0


def add_parser(sub) -> None:
    demo = sub.add_parser("demo", help="start the Gradio demo (http://127.0.0.1:7860)")
    demo.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    demo.add_argument("--port", type=arguments.integer(1, 65535), default=7860, help="port to listen on (default 7860)")
    demo.add_argument("--tiny", action="store_true", help="force the tiny embedded default (random weights)")
    demo.set_defaults(func=_cmd_demo)
