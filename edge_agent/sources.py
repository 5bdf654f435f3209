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
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, BinaryIO, Callable, Iterable, Iterator, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgejoule.errors import EdgejouleError

Reply = Optional[Callable[[np.ndarray], None]]
Request = tuple[np.ndarray, Reply]
ANSWER_TIMEOUT_S = 30.0
MAX_BODY_BYTES = 1 << 20
MAX_HEADER_BYTES = 4096
POLL_S = 0.25


def replay(site: str, stop: threading.Event) -> Iterator[Request]:
    """The site's test split, read now (not at the first channel, inside the first measured window)."""
    from edgejoule.sites import get_site, load_dataset

    H = load_dataset(get_site(site)).H("test")

    def channels() -> Iterator[Request]:
        while True:
            for h in H:
                if stop.is_set():
                    return
                yield h, None

    return channels()


def npz_files(path: Path, stop: threading.Event) -> Iterator[Request]:
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise EdgejouleError(f"no .npz files at {path}")
    for file in files:
        with np.load(file) as data:
            if "H" not in data:
                raise EdgejouleError(f"{file} has no array 'H' [samples, N_U, N_T]")
            for h in data["H"]:
                if stop.is_set():
                    return
                yield h, None


def read_npz_channel(body: bytes, shape: tuple[int, int]) -> np.ndarray:
    """``H`` from a ``.npz`` request body, read only once its size is known to be one channel's.

    A zip member inflates to what its header says (a 969 KiB body can say 1 GB), and an ``.npy`` header
    can ask for any shape, so both are checked before a byte is inflated, and exactly one channel's bytes
    are read: no request makes the agent allocate more than the site's channel (a few kB)."""
    count = shape[0] * shape[1]
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        infos = archive.infolist()
        if [i.filename for i in infos] != ["H.npy"]:
            raise ValueError(f"the .npz must hold exactly one array, H; it holds {[i.filename for i in infos][:5]}")
        if infos[0].file_size > count * 16 + MAX_HEADER_BYTES:
            raise ValueError(f"H inflates to {infos[0].file_size} bytes, more than one [N_U, N_T] = {list(shape)} channel")
        with archive.open(infos[0]) as member:
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            h_shape, fortran, dtype = read_header(member, max_header_size=MAX_HEADER_BYTES)
            if dtype.hasobject or dtype.kind not in "fc" or int(np.prod(h_shape, dtype=np.int64)) != count:
                raise ValueError(f"H must be a float or complex [N_U, N_T] = {list(shape)} array, "
                                 f"got {dtype} {list(h_shape)}")
            data = member.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise ValueError("H is shorter than its header says")
    return np.frombuffer(data, dtype).reshape(h_shape, order="F" if fortran else "C").astype(np.complex64)


class Endpoint:
    """Requests from the base station become the agent's inputs; each caller waits for its own precoder."""

    def __init__(self, n_users: int, n_antennas: int, stop: threading.Event) -> None:
        self.shape = (n_users, n_antennas)
        self.requests: queue.Queue[Request] = queue.Queue()
        self.stop = stop
        self.polled_at = time.monotonic()  # the serving loop is alive and waiting (the service watchdog)

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
        while not self.stop.is_set():
            try:
                request = self.requests.get(timeout=POLL_S)  # a timeout, so a stop is seen while idle
            except queue.Empty:
                self.polled_at = time.monotonic()
                continue
            self.polled_at = time.monotonic()
            yield request
        # stopping: the server takes no more; what was asked already is answered, then the stream ends
        self.close()
        while True:
            try:
                request = self.requests.get_nowait()
            except queue.Empty:
                return
            yield request

    def close(self) -> None:
        raise NotImplementedError


class BackgroundHttp:
    """A threading HTTP server on a daemon thread of its own (the precode endpoint, the health endpoint)."""

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name=handler.__name__, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PrecodeEndpoint(BackgroundHttp, Endpoint):
    """``http:HOST:PORT``: ``POST /precode`` with a ``.npz`` body holding ``H``, answered with one holding ``W``."""

    def __init__(self, host: str, port: int, n_users: int, n_antennas: int, stop: threading.Event) -> None:
        Endpoint.__init__(self, n_users, n_antennas, stop)
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
                    H = read_npz_channel(self.rfile.read(length), endpoint.shape)
                except (ValueError, OSError, zipfile.BadZipFile) as exc:
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

        BackgroundHttp.__init__(self, host, port, Handler)


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

    def __init__(self, address: str | tuple[str, int], n_users: int, n_antennas: int, stop: threading.Event) -> None:
        super().__init__(n_users, n_antennas, stop)
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
        threading.Thread(target=self.server.serve_forever, name="socket-endpoint", daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if isinstance(self.server.server_address, str):
            Path(self.server.server_address).unlink(missing_ok=True)


def _host_port(spec: str, scheme: str) -> tuple[str, int]:
    host, _, port = spec[len(scheme) + 1 :].rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"source '{spec}': use {scheme}:HOST:PORT, e.g. {scheme}:127.0.0.1:8555")
    return host, int(port)


def check_spec(spec: str) -> None:
    """Raise ValueError unless ``spec`` is a source this agent knows (the settings check it at start)."""
    scheme, _, rest = spec.partition(":")
    if spec == "replay" or (scheme in ("npz", "unix") and rest):
        return
    if scheme in ("http", "tcp"):
        _host_port(spec, scheme)
        return
    raise ValueError(f"unknown source '{spec}': use replay, npz:PATH, http:HOST:PORT, unix:PATH or tcp:HOST:PORT")


def open_source(spec: str, site: str, stop: threading.Event | None = None) -> Iterable[Request]:
    """The inputs ``spec`` names; they end once ``stop`` is set (after answering requests already queued).
    An endpoint is returned itself (each ``for`` loop continues its queue), so its ``polled_at`` is visible."""
    check_spec(spec)
    stop = stop or threading.Event()
    if spec == "replay":
        return replay(site, stop)
    if spec.startswith("npz:"):
        return npz_files(Path(spec[4:]), stop)
    from edgejoule.sites import get_site

    config = get_site(site)
    dims = (config.n_users, config.n_antennas)
    if spec.startswith("http:"):
        return PrecodeEndpoint(*_host_port(spec, "http"), *dims, stop)
    if spec.startswith("tcp:"):
        return SocketEndpoint(_host_port(spec, "tcp"), *dims, stop)
    return SocketEndpoint(spec[5:], *dims, stop)
