"""Where the agent's channel inputs come from, as ``(H, reply)`` pairs: ``H`` one channel ``[N_U, N_T]``
complex, ``reply`` a callable that hands the precoder ``W [N_T, N_U]`` back to whoever sent ``H`` (None when
nobody waits for it).

- ``replay``: the site's test split, over and over (demos);
- ``npz:PATH``: a ``.npz`` file, or a directory of them, each with an array ``H`` [samples, N_U, N_T];
- ``http:HOST:PORT``: a local endpoint fed by the base station. ``POST /precode`` with a ``.npz`` body holding
  ``H`` [N_U, N_T] or [1, N_U, N_T] answers with a ``.npz`` holding ``W`` [N_T, N_U], computed by the
  agent's current model (or its ZF fallback) and counted in its telemetry like any other inference.
"""

from __future__ import annotations

import io
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from core.errors import EdgejouleError

Reply = Optional[Callable[[np.ndarray], None]]
Request = tuple[np.ndarray, Reply]
ANSWER_TIMEOUT_S = 30.0
MAX_BODY_BYTES = 1 << 20


def replay(site: str) -> Iterator[Request]:
    from core.sites import get_site, load_dataset

    H = load_dataset(get_site(site)).H("test")
    while True:
        for h in H:
            yield h, None


def npz_files(path: Path) -> Iterator[Request]:
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise EdgejouleError(f"no .npz files at {path}")
    for file in files:
        with np.load(file) as data:
            if "H" not in data:
                raise EdgejouleError(f"{file} has no array 'H' [samples, N_U, N_T]")
            for h in data["H"]:
                yield h, None


class PrecodeEndpoint:
    """A loopback HTTP server whose requests become the agent's inputs; each waits for its own precoder."""

    def __init__(self, host: str, port: int) -> None:
        self.requests: queue.Queue[Request] = queue.Queue()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # one line per request is noise on an edge device
                pass

            def _answer(self, status: int, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                if self.path != "/precode":
                    return self._answer(404, b"POST /precode with a .npz body holding H")
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 < length <= MAX_BODY_BYTES:
                    return self._answer(413 if length else 411, b"body must be a .npz of at most 1 MiB")
                try:
                    with np.load(io.BytesIO(self.rfile.read(length))) as data:
                        H = np.asarray(data["H"], dtype=np.complex64)
                except (ValueError, KeyError, OSError) as exc:
                    return self._answer(400, f"expected a .npz with an array H [N_U, N_T]: {exc}".encode())
                if H.ndim == 3 and len(H) == 1:
                    H = H[0]
                if H.ndim != 2:
                    return self._answer(400, f"H must be [N_U, N_T], got shape {list(H.shape)}".encode())
                answer: queue.Queue[np.ndarray] = queue.Queue(maxsize=1)
                endpoint.requests.put((H, answer.put))
                try:
                    W = answer.get(timeout=ANSWER_TIMEOUT_S)
                except queue.Empty:
                    return self._answer(503, b"the agent did not answer in time")
                buffer = io.BytesIO()
                np.savez(buffer, W=W)
                self._answer(200, buffer.getvalue(), "application/octet-stream")

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def __iter__(self) -> Iterator[Request]:
        while True:
            yield self.requests.get()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def open_source(spec: str, site: str) -> Iterator[Request]:
    if spec == "replay":
        return replay(site)
    if spec.startswith("npz:"):
        return npz_files(Path(spec[4:]))
    if spec.startswith("http:"):
        host, _, port = spec[5:].rpartition(":")
        if not host or not port.isdigit():
            raise EdgejouleError(f"source '{spec}': use http:HOST:PORT, e.g. http:127.0.0.1:8555")
        return iter(PrecodeEndpoint(host, int(port)))
    raise EdgejouleError(f"unknown source '{spec}': use replay, npz:PATH or http:HOST:PORT")
