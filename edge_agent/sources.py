"""Where the agent's channel inputs come from, as ``(H, reply)`` pairs: ``H`` one channel ``[N_U, N_T]``
complex, ``reply`` a callable that hands the precoder ``W [N_T, N_U]`` back to whoever sent ``H`` (None when
nobody waits for it).

- ``replay``: the site's test split, over and over (demos);
- ``npz:PATH``: a ``.npz`` file, or a directory of them, each with an array ``H`` [samples, N_U, N_T];
- ``http:HOST:PORT``: a local endpoint fed by the base station. ``POST /precode`` with a ``.npz`` body holding
  ``H`` [N_U, N_T] or [1, N_U, N_T] answers with a ``.npz`` holding ``W`` [N_T, N_U], computed by the
  agent's current model (or its ZF fallback) and counted in its telemetry like any other inference;
- ``unix:PATH`` / ``tcp:HOST:PORT``: a stream socket fed by the base station, one connection carrying any
  number of length-prefixed frames (``Frame`` below, docs/EDGE.md): the channel in, the precoder out.

A channel of the wrong shape or with non-finite entries is answered with an error and never reaches the
agent's serving loop, so one bad request cannot stop the agent.
"""

from __future__ import annotations

import io
import json
import queue
import socketserver
import stat
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, BinaryIO, Callable, Iterator, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgejoule.errors import EdgejouleError

Reply = Optional[Callable[[np.ndarray], None]]
Request = tuple[np.ndarray, Reply]
ANSWER_TIMEOUT_S = 30.0
MAX_BODY_BYTES = 1 << 20
MAX_HEADER_BYTES = 4096


def replay(site: str) -> Iterator[Request]:
    from edgejoule.sites import get_site, load_dataset

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


class Endpoint:
    """Requests from the base station become the agent's inputs; each caller waits for its own precoder."""

    def __init__(self, n_users: int, n_antennas: int) -> None:
        self.shape = (n_users, n_antennas)
        self.requests: queue.Queue[Request] = queue.Queue()

    def problem(self, H: np.ndarray) -> str | None:
        """Why ``H`` cannot be served (None if it can): checked here, so the serving loop never sees it."""
        if H.shape != self.shape:
            return f"H must be [N_U, N_T] = {list(self.shape)} for this site, got shape {list(H.shape)}"
        if not np.all(np.isfinite(H)):
            return "H has non-finite entries (NaN or inf)"
        return None

    def ask(self, H: np.ndarray) -> np.ndarray | None:
        """Queue ``H`` for the agent and wait for its precoder; None if the agent did not answer in time."""
        answer: queue.Queue[np.ndarray] = queue.Queue(maxsize=1)
        self.requests.put((H, answer.put))
        try:
            return answer.get(timeout=ANSWER_TIMEOUT_S)
        except queue.Empty:
            return None

    def __iter__(self) -> Iterator[Request]:
        while True:
            yield self.requests.get()


class PrecodeEndpoint(Endpoint):
    """``http:HOST:PORT``: ``POST /precode`` with a ``.npz`` body holding ``H``, answered with one holding ``W``."""

    def __init__(self, host: str, port: int, n_users: int, n_antennas: int) -> None:
        super().__init__(n_users, n_antennas)
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
                if problem := endpoint.problem(H):
                    return self._answer(400, problem.encode())
                W = endpoint.ask(H)
                if W is None:
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

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Frame(BaseModel):
    """The JSON header of one socket frame, both ways (docs/EDGE.md):

    ``uint32 big-endian header length | header (UTF-8 JSON, this model) | payload``

    where the payload is ``prod(shape)`` complex64 values, little-endian, C order (``ndarray.tobytes()``).
    The base station sends ``shape = [N_U, N_T]`` and the channel; the agent answers ``shape = [N_T, N_U]``
    and the precoder, or an ``error`` and no payload.
    """

    model_config = ConfigDict(extra="forbid")

    shape: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list, max_length=3)
    dtype: Literal["complex64"] = "complex64"
    error: str | None = None

    @property
    def payload_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * 8 if self.shape else 0


def write_frame(stream: BinaryIO, frame: Frame, payload: bytes = b"") -> None:
    header = frame.model_dump_json(exclude_none=True).encode()
    stream.write(struct.pack(">I", len(header)) + header + payload)
    stream.flush()


def read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    """``n`` bytes, or None if the peer closed the connection first."""
    data = stream.read(n)
    return data if len(data) == n else None


class FrameError(Exception):
    """A frame that breaks the format: answered with its reason; ``fatal`` if the stream lost its framing."""

    def __init__(self, reason: str, fatal: bool) -> None:
        super().__init__(reason)
        self.fatal = fatal


def read_frame(stream: BinaryIO) -> tuple[Frame, bytes] | None:
    """One frame from ``stream``; None at a clean end of the connection."""
    prefix = read_exactly(stream, 4)
    if prefix is None:
        return None
    (length,) = struct.unpack(">I", prefix)
    if not 0 < length <= MAX_HEADER_BYTES:
        raise FrameError(f"header length {length} is not in 1..{MAX_HEADER_BYTES}: is this the frame format "
                         "of docs/EDGE.md (uint32 big-endian header length, JSON header, payload)?", fatal=True)
    header = read_exactly(stream, length)
    if header is None:
        return None
    try:
        frame = Frame.model_validate(json.loads(header))
    except (ValueError, ValidationError) as exc:
        raise FrameError(f"the header is not a valid frame header: {str(exc).splitlines()[0]}", fatal=True) from None
    if frame.payload_bytes > MAX_BODY_BYTES:
        raise FrameError(f"a payload of {frame.payload_bytes} bytes is over {MAX_BODY_BYTES}", fatal=True)
    payload = read_exactly(stream, frame.payload_bytes)
    if payload is None:
        return None
    return frame, payload


class SocketEndpoint(Endpoint):
    """``unix:PATH`` or ``tcp:HOST:PORT``: frames in, precoders out, many per connection, one thread each.

    A frame whose header cannot be read loses the stream's framing: it is answered with the error and the
    connection is closed. A well-framed request that cannot be served (wrong shape, NaN) is answered with
    the error and the connection stays open. The agent never sees either.
    """

    def __init__(self, address: str | tuple[str, int], n_users: int, n_antennas: int) -> None:
        super().__init__(n_users, n_antennas)
        endpoint = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while True:
                    try:
                        request = read_frame(self.rfile)
                    except FrameError as exc:
                        write_frame(self.wfile, Frame(error=str(exc)))
                        if exc.fatal:
                            return
                        continue
                    except OSError:  # the base station went away mid-frame
                        return
                    if request is None:
                        return
                    frame, payload = request
                    H = np.frombuffer(payload, dtype="<c8").reshape(frame.shape) if frame.shape else np.empty(0)
                    if H.ndim == 3 and len(H) == 1:
                        H = H[0]
                    if problem := endpoint.problem(H):
                        write_frame(self.wfile, Frame(error=problem))
                        continue
                    W = endpoint.ask(H)
                    if W is None:
                        write_frame(self.wfile, Frame(error="the agent did not answer in time"))
                        continue
                    write_frame(self.wfile, Frame(shape=list(W.shape)), np.ascontiguousarray(W, "<c8").tobytes())

        if isinstance(address, str):
            path = Path(address)
            if path.exists() and stat.S_ISSOCK(path.stat().st_mode):  # left by an agent that died
                path.unlink()
            self.server: socketserver.BaseServer = socketserver.ThreadingUnixStreamServer(address, Handler)
        else:
            self.server = socketserver.ThreadingTCPServer(address, Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if isinstance(self.server.server_address, str):
            Path(self.server.server_address).unlink(missing_ok=True)


def _host_port(spec: str, scheme: str) -> tuple[str, int]:
    host, _, port = spec[len(scheme) + 1 :].rpartition(":")
    if not host or not port.isdigit():
        raise EdgejouleError(f"source '{spec}': use {scheme}:HOST:PORT, e.g. {scheme}:127.0.0.1:8555")
    return host, int(port)


def open_source(spec: str, site: str) -> Iterator[Request]:
    if spec == "replay":
        return replay(site)
    if spec.startswith("npz:"):
        return npz_files(Path(spec[4:]))
    from edgejoule.sites import get_site

    config = get_site(site)
    dims = (config.n_users, config.n_antennas)
    if spec.startswith("http:"):
        return iter(PrecodeEndpoint(*_host_port(spec, "http"), *dims))
    if spec.startswith("tcp:"):
        return iter(SocketEndpoint(_host_port(spec, "tcp"), *dims))
    if spec.startswith("unix:") and len(spec) > 5:
        return iter(SocketEndpoint(spec[5:], *dims))
    raise EdgejouleError(f"unknown source '{spec}': use replay, npz:PATH, http:HOST:PORT, unix:PATH or tcp:HOST:PORT")
