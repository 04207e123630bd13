"""The demo app: one tab per capability, a queue with a concurrency limit, files only from the
app's own temp folder, no telemetry."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Optional

from idgen.errors import IdgenError
from idgen.app.demo.common import MAX_FILE_SIZE, DemoContext
from idgen.app.demo.edit_tab import build_inpaint_tab, build_swap_tab
from idgen.app.demo.generate_tab import build_generate_tab
from idgen.app.demo.models_tab import build_models_tab
from idgen.app.demo.restore_tab import build_restore_tab
from idgen.app.demo.train_tab import build_train_tab

#: The tabs in page order; adding a capability is one line here.
TABS = [build_generate_tab, build_inpaint_tab, build_swap_tab, build_restore_tab, build_train_tab, build_models_tab]


class ServerAddressError(IdgenError):
    """The demo cannot listen where it was asked to: the host does not resolve or is not this
    machine's, or the port is taken."""


def check_address(host: str, port: int) -> None:
    """Raise `ServerAddressError` unless a server can listen on `host`:`port` now."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        raise ServerAddressError(f"host {host!r} does not resolve; pass --host (e.g. 127.0.0.1).") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ServerAddressError(f"port {port} on {host} is in use; pass --port") from None
            raise ServerAddressError(f"cannot listen on {host}:{port} ({e.strerror}); pass --host / --port") from None


def build_app(ctx: Optional[DemoContext] = None, *, concurrency: int = 1, max_queue: int = 16):
    """The Gradio Blocks app.

    Args:
        ctx: the demo state (default: a new one with the CLI's weights rule).
        concurrency: model jobs run at once, all tabs together (`common.model_job`; 1: two users
            never hold two pipelines' activations at the same time); the others wait in the queue
            (`max_queue` places) with their position shown. Light events (face detection, the
            models report) have the same limit, each in its own group.
    """
    ctx = ctx or DemoContext()
    # Uploads land in the app's own folder: Gradio reads GRADIO_TEMP_DIR when the app and its
    # server are created (a value the user set is kept). No telemetry: Gradio reads
    # GRADIO_ANALYTICS_ENABLED wherever the Blocks' own setting does not reach.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(ctx.root / "uploads"))
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr  # the demo extra: imported when a page is built, so the CLI and tests import this without it

    with gr.Blocks(title="idgen — identity-preserving generation", analytics_enabled=False) as demo:
        gr.Markdown("# idgen\nIdentity-preserving generation, inpainting, face swap and training.")
        banner = ctx.banner()
        if banner:
            gr.Markdown(banner, elem_id="tiny-banner")
        with gr.Tabs():
            for build in TABS:
                build(ctx)
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    demo.idgen_context = ctx
    return demo


def launch(host: str = "127.0.0.1", port: int = 7860, *, ctx: Optional[DemoContext] = None,
           tiny: Optional[bool] = None, share: bool = False, max_file_size: str = MAX_FILE_SIZE,
           concurrency: int = 1, max_queue: int = 16, **kwargs):
    """Build and serve the demo (blocks until stopped unless `prevent_thread_lock=True`).

    Args:
        ctx: the demo state (default: `DemoContext(tiny=tiny)`, a fresh temp folder).
        max_file_size: per-upload limit (Gradio's syntax: "20mb"); larger uploads are refused.
        concurrency / max_queue: the queue (`build_app`).
        kwargs: more of `gr.Blocks.launch`'s arguments (`prevent_thread_lock`, `quiet`, ...).

    Returns:
        The running Blocks app (with `prevent_thread_lock=True`).

    Raises:
        ServerAddressError: `host` does not resolve or is not this machine's, or `port` is taken.
    """
    check_address(host, port)
    demo = build_app(ctx or DemoContext(tiny=tiny), concurrency=concurrency, max_queue=max_queue)
    root: Path = demo.idgen_context.root
    # Besides Gradio's own upload cache (inside `root` unless GRADIO_TEMP_DIR is set), only the
    # results folder is served: no other path of the machine.
    try:
        demo.launch(server_name=host, server_port=port, share=share, max_file_size=max_file_size,
                    allowed_paths=[str(root / "results")], show_error=False, **kwargs)
    except OSError as e:  # the port was taken since `check_address`
        raise ServerAddressError(f"cannot serve on {host}:{port} ({e}); pass --port") from None
    return demo
