"""Real servers for the STAC API tests, started and stopped by the tests themselves.

- :func:`http_server`: ``python -m RangeHTTPServer`` (the package ``rangehttpserver``) serving
  a folder with HTTP range requests, so GDAL reads COGs over ``/vsicurl/`` as from a cloud
  bucket;
- :func:`stac_api`: ``rustac serve`` (stac-rs, a maintained STAC API server, from the
  package ``rustac``) with its in-memory backend, loaded with an item collection;
- :func:`failing_server`: an HTTP server answering every request with 500.

Each is a context manager yielding its base URL; it waits until the server answers and
kills it on exit.
"""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {out}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not start within {timeout} s")


@contextmanager
def _process(cmd: list[str], url: str, cwd: Path | None = None) -> Iterator[str]:
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait(url, proc)
        yield url.rstrip("/")
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


@contextmanager
def http_server(folder: Path) -> Iterator[str]:
    """``folder`` served over HTTP with range requests; yields ``http://127.0.0.1:PORT``."""
    pytest.importorskip("RangeHTTPServer")
    port = free_port()
    with _process([sys.executable, "-m", "RangeHTTPServer", "-b", "127.0.0.1", str(port)],
                  f"http://127.0.0.1:{port}/", cwd=folder) as url:
        yield url


def rustac() -> str:
    exe = shutil.which("rustac") or str(Path(sys.executable).parent / "rustac")
    if not Path(exe).is_file():
        pytest.skip("the rustac STAC API server is not installed (pip install rustac)")
    return exe


@contextmanager
def stac_api(items_file: Path) -> Iterator[str]:
    """A STAC API serving the items of ``items_file`` (a GeoJSON item collection)."""
    port = free_port()
    with _process([rustac(), "serve", str(items_file), "--addr", f"127.0.0.1:{port}",
                   "--create-collections"], f"http://127.0.0.1:{port}/") as url:
        yield url


class _Fail(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(500)
        self.end_headers()
        self.wfile.write(b"internal error")

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        return None


@contextmanager
def failing_server() -> Iterator[str]:
    """An HTTP server that answers everything with 500."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Fail)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
