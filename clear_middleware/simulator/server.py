"""The simulator's HTTP server: OpenAI-compatible endpoints on 127.0.0.1, in a background thread.

Endpoints: ``POST /v1/chat/completions`` (and ``/chat/completions``), JSON or SSE streaming;
``GET /v1/models`` (and ``/models``). One thread per connection (HTTP/1.1 keep-alive; streams
use chunked transfer encoding), so hundreds of concurrent requests are served side by side.

The server keeps a log of what it served (``requests``) and takes injected faults for tests
(``fail_next``, ``delay_next``, ``hang_next``), applied to chat requests in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import select
import socket
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from clear_middleware.simulator import probe, protocol, replay
from clear_middleware.simulator._tokens import encoding
from clear_middleware.simulator.catalog import ReplayPlan, RunCatalog, load_catalog

log = logging.getLogger(__name__)

FaultKind = Literal["error", "delay", "hang"]
CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
MODEL_PATHS = ("/v1/models", "/models")
# Raised by socket writes when the client has gone away.
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


@dataclass(frozen=True)
class ServedRequest:
    """One chat request as the server handled it (tokens throughout).

    Attributes:
        seq: arrival order, from 0.
        status: HTTP status answered, or 0 when no response was sent (a hang).
        fault: the injected fault applied, if any.
        model: model name as sent (``None`` if the body had none).
        item: the item replayed (``"<benchmark>/<item_id>"``), if the request was valid.
        run_id: the replayed run (row of the sweep), if any.
        requested_cap: the cap asked for, or ``None``.
        cap: the cap applied (clipped to the model's output limit), if valid.
        prompt_tokens: prompt tokens reported.
        already_tokens: tokens of a continued partial answer (0 if not a continuation).
        completion_tokens: tokens the reply carries (as reported in ``usage``).
        reasoning_tokens: the reasoning part of ``completion_tokens``.
        sent_tokens: completion tokens actually written to the connection before the reply ended
            or the client went away (equal to ``completion_tokens`` for a complete reply).
        finish_reason: ``"stop"`` or ``"length"``, ``None`` for errors.
        correct: the reply ends with the gold answer.
        streamed: the reply was streamed (SSE).
        continued: the request continued a partial answer.
        extrapolated: no run was informative at this cap (see ``catalog``).
        disconnected: the client went away before the reply was complete.
    """

    seq: int
    status: int
    fault: FaultKind | None = None
    model: str | None = None
    item: str | None = None
    run_id: int | None = None
    requested_cap: int | None = None
    cap: int | None = None
    prompt_tokens: int = 0
    already_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    sent_tokens: int = 0
    finish_reason: str | None = None
    correct: bool = False
    streamed: bool = False
    continued: bool = False
    extrapolated: bool = False
    disconnected: bool = False


@dataclass(frozen=True)
class _Fault:
    kind: FaultKind
    status: int = 500
    seconds: float = 0.0


class SimulatorServer:
    """A local reasoning model that replays real runs of the budget sweep.

    Args:
        host: interface to bind (loopback by default).
        port: TCP port; 0 picks a free one.
        sweep_path: a sweep CSV (optionally ``.gz``); the bundled dev sweep by default.
        tokens_per_second: pace of generation, or ``None`` to answer at once. Streams sleep
            between chunks, non-streamed replies before answering.
        stream_chunk_tokens: tokens per SSE chunk (>= 1).
        idle_timeout_s: seconds an idle keep-alive connection is kept open.
        probe_models: synthetic probe models served besides the sweep models, ``{name:
            sigma}``: each answers an item's median correct length times log-normal noise of
            that sigma (natural log, >= 0) (see :mod:`clear_middleware.simulator.probe`).
            Default: ``{"probe-oracle": 0.5}``.
        probe_target: the target model whose runs the probes describe (default: named in each
            probe request).
        probe_seed: seed of the probes' noise (int).

    ``tokens_per_second`` and ``stream_chunk_tokens`` are plain attributes: a test may change
    them while the server runs (they apply to requests that start afterwards).

    Example:
        >>> import httpx
        >>> with SimulatorServer() as sim:
        ...     reply = httpx.post(f"{sim.base_url}/chat/completions", json={
        ...         "model": "deepscaler-1.5b", "max_tokens": 4096, "seed": 0,
        ...         "messages": [{"role": "user", "content": "[[item:aime24/2024-I-1]]"}]})
        ...     reply.json()["usage"]["completion_tokens"] <= 4096
        True
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sweep_path: str | None = None,
        tokens_per_second: float | None = None,
        stream_chunk_tokens: int = 32,
        idle_timeout_s: float = 30.0,
        probe_models: dict[str, float] | None = None,
        probe_target: str | None = None,
        probe_seed: int = 0,
    ) -> None:
        if tokens_per_second is not None and tokens_per_second <= 0:
            raise ValueError(f"tokens_per_second must be > 0, got {tokens_per_second}")
        if stream_chunk_tokens < 1:
            raise ValueError(f"stream_chunk_tokens must be >= 1, got {stream_chunk_tokens}")
        probes = dict(probe.DEFAULT_PROBE_MODELS if probe_models is None else probe_models)
        for name, sigma in probes.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(f"probe_models keys must be model names without '/'; got "
                                 f"{name!r}")
            if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not (
                    0 <= sigma < float("inf")):
                raise ValueError(f"probe_models[{name!r}] (noise sigma, natural log) must be a "
                                 f"finite number >= 0; got {sigma!r}")
        if isinstance(probe_seed, bool) or not isinstance(probe_seed, int):
            raise ValueError(f"probe_seed must be an integer; got {probe_seed!r}")
        self.probe_models = {name: float(sigma) for name, sigma in probes.items()}
        self.probe_target = probe_target
        self.probe_seed = probe_seed
        self._address = (host, port)
        self._sweep_path = sweep_path
        self.tokens_per_second = tokens_per_second
        self.stream_chunk_tokens = stream_chunk_tokens
        self.idle_timeout_s = idle_timeout_s
        self._lock = threading.Condition()
        self._log: list[ServedRequest] = []
        self._arrivals = 0
        self._faults: deque[_Fault] = deque()
        self._release = threading.Event()  # wakes hung requests
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._catalog: RunCatalog | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> SimulatorServer:
        """Load the runs and start serving; returns ``self``. Idempotent while running."""
        if self._httpd is not None:
            return self
        self._catalog = load_catalog(self._sweep_path)
        encoding()  # load the tokenizer before the first request races for it
        self._stopping.clear()
        self._release.clear()
        self._httpd = _HTTPServer(self._address, _Handler, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() waits for the loop to notice
            name="clear-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: wakes delayed and hung requests and closes open connections."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        self._release.set()
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> SimulatorServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # -- addresses and data ----------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the simulator is not running; call start() first")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no path)."""
        return f"http://{self._address[0]}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ``<url>/v1`` (pass it as ``api_base``)."""
        return f"{self.url}/v1"

    @property
    def catalog(self) -> RunCatalog:
        if self._catalog is None:
            self._catalog = load_catalog(self._sweep_path)
        return self._catalog

    # -- observability ---------------------------------------------------------------------

    @property
    def requests(self) -> list[ServedRequest]:
        """The chat requests handled so far, in the order they were answered (a copy).

        An entry is logged before its client can see the end of the reply, so after a call
        returns, its entry is here.
        """
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def wait_for_arrivals(self, count: int, timeout_s: float = 5.0) -> bool:
        """Block until ``count`` chat requests have arrived in total (handled or not)."""
        with self._lock:
            return self._lock.wait_for(lambda: self._arrivals >= count, timeout=timeout_s)

    # -- fault injection -------------------------------------------------------------------

    def fail_next(self, count: int = 1, *, status: int = 500) -> None:
        """Answer the next ``count`` chat requests with an error of HTTP ``status``."""
        self._add_faults(count, _Fault("error", status=status))

    def delay_next(self, count: int = 1, *, seconds: float) -> None:
        """Hold the next ``count`` chat requests for ``seconds`` before answering them."""
        self._add_faults(count, _Fault("delay", seconds=seconds))

    def hang_next(self, count: int = 1) -> None:
        """Never answer the next ``count`` chat requests: they are held until ``release_hung``
        or ``stop``, then their connections are closed without a response."""
        self._release.clear()
        self._add_faults(count, _Fault("hang"))

    def release_hung(self) -> None:
        """Let go of hung requests (their connections close without a response)."""
        self._release.set()

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add_faults(self, count: int, fault: _Fault) -> None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        with self._lock:
            self._faults.extend([fault] * count)

    # -- used by the handler ---------------------------------------------------------------

    def _arrive(self) -> tuple[int, _Fault | None]:
        with self._lock:
            seq = self._arrivals
            self._arrivals += 1
            fault = self._faults.popleft() if self._faults else None
            self._lock.notify_all()
            return seq, fault

    def _record(self, served: ServedRequest) -> None:
        with self._lock:
            self._log.append(served)

    def _amend(self, seq: int, **changes: Any) -> None:
        """Correct the logged entry of request ``seq`` (gone if the log was cleared since)."""
        with self._lock:
            for index in range(len(self._log) - 1, -1, -1):
                if self._log[index].seq == seq:
                    self._log[index] = dataclasses.replace(self._log[index], **changes)
                    return

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024  # the listen backlog: bursts of hundreds of connections

    def __init__(self, address: tuple[str, int], handler: type, sim: SimulatorServer) -> None:
        self.sim = sim
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("simulator: unhandled error serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        self.timeout = self.server.sim.idle_timeout_s
        super().setup()
        self.server.sim._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.sim._track(self.connection, add=False)
        with contextlib.suppress(OSError):  # the client is gone; nothing left to flush
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("simulator: " + format, *args)

    # -- routes ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in MODEL_PATHS:
            self._send_json(200, protocol.models_body(self.server.sim.catalog))
        else:
            self._send_json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self._read_body()
        if path not in CHAT_PATHS:
            self._send_json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})
            return
        sim = self.server.sim
        seq, fault = sim._arrive()
        model = body.get("model") if isinstance(body, dict) else None
        model = model if isinstance(model, str) else None
        fault_kind = fault.kind if fault else None
        # Each outcome is logged before the client can see the end of its response, so a
        # client that has its answer always finds it in ``requests``.
        if fault is not None and fault.kind == "error":
            sim._record(ServedRequest(seq, fault.status, fault="error", model=model))
            message = {"error": {"message": "injected fault", "type": "server_error"}}
            self._send_json(fault.status, message)
            return
        if fault is not None and fault.kind == "hang":
            sim._release.wait()
            self.close_connection = True
            self._drop()
            sim._record(ServedRequest(seq, 0, fault="hang", model=model, disconnected=True))
            return
        if fault is not None and fault.kind == "delay" and sim._stopping.wait(fault.seconds):
            self.close_connection = True  # stopped while delayed: no response
            sim._record(ServedRequest(seq, 0, fault="delay", model=model, disconnected=True))
            return
        probe_name = probe.probe_model_name(model, sim.probe_models)
        if probe_name is not None:
            self._probe(seq, body, probe_name, model or probe_name, fault_kind)
            return
        try:
            if body is None:
                raise protocol.RequestError(400, "request body is not valid JSON")
            request = protocol.parse_request(body, sim.catalog)
        except protocol.RequestError as err:
            sim._record(ServedRequest(seq, err.status, fault=fault_kind, model=model))
            self._send_bytes(err.status, err.body(), "application/json")
            return
        plan = sim.catalog.plan(
            request.sweep_model,
            request.item,
            request.cap,
            request.seed_key,
            already=request.already,
            prefer_run_id=request.prefer_run_id,
        )
        served = _served(seq, request, plan, fault_kind, streamed=request.stream)
        if request.stream:
            self._stream(served, request, plan)
        else:
            self._reply(served, request, plan)

    # -- replies ---------------------------------------------------------------------------

    def _probe(self, seq: int, body: Any, name: str, model: str,
               fault_kind: FaultKind | None) -> None:
        sim = self.server.sim
        try:
            reply = probe.answer(body, name, sim.probe_models[name], sim.catalog,
                                 target=sim.probe_target, seed=sim.probe_seed)
        except protocol.RequestError as err:
            sim._record(ServedRequest(seq, err.status, fault=fault_kind, model=model))
            self._send_bytes(err.status, err.body(), "application/json")
            return
        sim._record(ServedRequest(
            seq, 200, fault=fault_kind, model=model, item=reply.item,
            requested_cap=reply.requested_cap, cap=reply.cap, prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens, sent_tokens=reply.completion_tokens,
            finish_reason=reply.finish_reason))
        body_out = probe.completion_body(f"chatcmpl-sim-{seq}", reply, model)
        if not self._send_json(200, body_out):
            sim._amend(seq, sent_tokens=0, disconnected=True)

    def _reply(self, served: ServedRequest, request: protocol.SimRequest, plan: ReplayPlan) -> None:
        sim = self.server.sim
        text = replay.render(plan)
        served = dataclasses.replace(served, reasoning_tokens=text.reasoning_tokens)
        pace = plan.completion_tokens / sim.tokens_per_second if sim.tokens_per_second else 0
        if (pace and sim._stopping.wait(pace)) or self._client_gone():
            self.close_connection = True
            sim._record(dataclasses.replace(served, disconnected=True))
            return
        body = protocol.completion_body(f"chatcmpl-sim-{served.seq}", request, plan, text)
        sim._record(dataclasses.replace(served, sent_tokens=plan.completion_tokens))
        if not self._send_json(200, body):
            sim._amend(served.seq, sent_tokens=0, disconnected=True)

    def _stream(
        self, served: ServedRequest, request: protocol.SimRequest, plan: ReplayPlan
    ) -> None:
        sim = self.server.sim
        request_id = f"chatcmpl-sim-{served.seq}"
        reasoning_tokens = 0
        sent = 0
        logged = False
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            opening = {"role": "assistant", "content": ""}
            self._event(protocol.chunk_body(request_id, request.model, opening))
            for part, text, n in replay.chunks(plan, sim.stream_chunk_tokens):
                if sim.tokens_per_second and sim._stopping.wait(n / sim.tokens_per_second):
                    raise ConnectionAbortedError("simulator stopping")
                if self._client_gone():
                    raise ConnectionAbortedError("client went away")
                field = "reasoning_content" if part == "reasoning" else "content"
                self._event(protocol.chunk_body(request_id, request.model, {field: text}))
                sent += n
                reasoning_tokens += n if part == "reasoning" else 0
            sim._record(
                dataclasses.replace(served, sent_tokens=sent, reasoning_tokens=reasoning_tokens)
            )
            logged = True
            finish = protocol.finish_reason(plan)
            self._event(protocol.chunk_body(request_id, request.model, {}, finish))
            if request.include_usage:
                fields = protocol.usage(request.prompt_tokens, sent, reasoning_tokens)
                self._event(protocol.usage_chunk_body(request_id, request.model, fields))
            self._write_chunk(b"data: [DONE]\n\n")
            self._write_chunk(b"")
        except _GONE:
            self.close_connection = True
            if not logged:
                gone = dataclasses.replace(
                    served, sent_tokens=sent, reasoning_tokens=reasoning_tokens, disconnected=True
                )
                sim._record(gone)
            else:  # every token went out; only the closing events were lost
                sim._amend(served.seq, disconnected=True)

    # -- wire helpers ----------------------------------------------------------------------

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _event(self, payload: dict[str, Any]) -> None:
        self._write_chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        # HTTP/1.1 chunked framing keeps the connection reusable after the stream.
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _send_json(self, status: int, payload: dict[str, Any]) -> bool:
        return self._send_bytes(status, json.dumps(payload).encode(), "application/json")

    def _send_bytes(self, status: int, data: bytes, content_type: str) -> bool:
        """Send a whole response; False if the client was gone."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return True
        except _GONE:
            self.close_connection = True
            return False

    def _client_gone(self) -> bool:
        """True if the client has closed its end (checked before writing, so a reply that
        nobody reads is not counted as sent)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _drop(self) -> None:
        with contextlib.suppress(OSError):  # already gone
            self.connection.shutdown(socket.SHUT_RDWR)


def _served(
    seq: int,
    request: protocol.SimRequest,
    plan: ReplayPlan,
    fault: FaultKind | None,
    *,
    streamed: bool,
) -> ServedRequest:
    """The log entry of a valid request, before anything is sent."""
    return ServedRequest(
        seq=seq,
        status=200,
        fault=fault,
        model=request.model,
        item=request.item,
        run_id=plan.run.run_id,
        requested_cap=request.requested_cap,
        cap=request.cap,
        prompt_tokens=request.prompt_tokens,
        already_tokens=request.already,
        completion_tokens=plan.completion_tokens,
        finish_reason=protocol.finish_reason(plan),
        correct=plan.correct,
        streamed=streamed,
        continued=request.continued,
        extrapolated=plan.extrapolated,
    )
