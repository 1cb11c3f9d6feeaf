"""A loopback HTTP server that records the JSON bodies LiteLLM sends and answers minimally.

It stands in for three provider APIs at once, chosen by the request path, so a test can point
``litellm.completion(api_base=server.url, ...)`` at it and then assert the exact payload:

- ``.../chat/completions``: an OpenAI chat completion;
- ``.../messages``: an Anthropic Messages API response;
- ``.../models/<model>:generateContent``: a Gemini ``generateContent`` response.

The canned answers are the smallest bodies each LiteLLM response parser accepts; their content
does not matter to the tests, only what was *sent* does.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: method, path (with query string), headers and JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


_OPENAI_RESPONSE = {
    "id": "chatcmpl-rec",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "recorded",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "ok"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}

_ANTHROPIC_RESPONSE = {
    "id": "msg_rec",
    "type": "message",
    "role": "assistant",
    "model": "recorded",
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 5, "output_tokens": 1},
}

_GEMINI_RESPONSE = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": "ok"}]},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1, "totalTokenCount": 6},
    "modelVersion": "recorded",
}


def _response_for(path: str) -> dict[str, Any]:
    route = path.split("?", 1)[0]
    if route.endswith(":generateContent"):
        return _GEMINI_RESPONSE
    if route.endswith("/messages"):
        return _ANTHROPIC_RESPONSE
    if route.endswith("/chat/completions"):
        return _OPENAI_RESPONSE
    raise LookupError(route)


class RecordingServer:
    """Records every POST body; use as a context manager. ``url`` is ``http://127.0.0.1:<port>``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def last_body(self) -> dict[str, Any]:
        """The JSON body of the most recent request (``AssertionError`` if none arrived)."""
        recorded = self.requests
        assert recorded, "the recording server received no request"
        return recorded[-1].body

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server._requests.append(
                        RecordedRequest("POST", self.path, dict(self.headers.items()), body)
                    )
                try:
                    payload = json.dumps(_response_for(self.path)).encode()
                    status = 200
                except LookupError:
                    payload, status = b'{"error": "unknown route"}', 404
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler
