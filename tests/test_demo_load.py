"""A bounded load test of the demo through a real server on 127.0.0.1 (the tiny embedded default):
several `gradio_client` clients submit jobs at once; each job finishes or is refused with a
message, the server stays up, each client's results land in its own folder, and the process's
memory comes back near where it was."""

import gc
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

from idgen.app.demo import DemoContext, launch  # noqa: E402

from demo_requests import generate_args  # noqa: E402

CLIENTS, JOBS_EACH, MAX_QUEUE = 4, 2, 6
#: RSS growth allowed after the load (allocator arenas and Gradio's caches are not given back at once).
SLACK_MB = 400


def rss_mb() -> float:
    """This process's resident memory (the server runs in it), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture
def server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = DemoContext(tiny=True, root=tmp_path / "demo")
    app = launch(port=port, ctx=ctx, prevent_thread_lock=True, quiet=True, max_queue=MAX_QUEUE)
    yield ctx, f"http://127.0.0.1:{port}/"
    app.close()


def test_concurrent_clients_are_served_or_refused_and_memory_comes_back(server):
    ctx, url = server
    clients = [Client(url, verbose=False) for _ in range(CLIENTS)]
    clients[0].predict(*generate_args(steps=3, seed=0), api_name="/generate")  # the pipeline is built once, here
    gc.collect()
    baseline = rss_mb()

    jobs = [(client, client.submit(*generate_args(steps=3, seed=k), api_name="/generate"))
            for client in clients for k in range(JOBS_EACH)]
    finished, refused = [], []
    for client, job in jobs:
        try:
            _, record, _ = job.result(timeout=120)
        except Exception as e:  # the queue's refusal: a message, not a dropped connection
            refused.append(str(e))
            continue
        image = Path(record["files"][0])
        assert image.parents[1] == ctx.session_folder(client.session_hash)
        assert np.asarray(Image.open(image)).shape == (64, 64, 3)
        finished.append(image)
    assert len(finished) >= MAX_QUEUE and len(finished) + len(refused) == CLIENTS * JOBS_EACH
    assert all("queue is full" in message.lower() for message in refused), refused
    assert not ctx.running()

    # the server is still up, and serves a job as before
    _, record, _ = clients[-1].predict(*generate_args(steps=3, seed=99), api_name="/generate")
    assert Path(record["files"][0]).is_file()
    gc.collect()
    assert rss_mb() < baseline + SLACK_MB, (baseline, rss_mb())
