"""A loopback OpenAI-compatible server that always calls the first tool it is offered.

The simulator replays reasoning runs, which hold no tool calls; this server stands in for a
provider that calls tools, so tool-call parsing (plain and streamed) is tested over HTTP. It
records every request body.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

USAGE = {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52}
ARGUMENTS = '{"a": 1, "b": 2}'


class ToolServer:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                name = body["tools"][0]["function"]["name"] if body.get("tools") else None
                if body.get("stream"):
                    self._stream(name)
                else:
                    self._json(_completion(name))

            def _json(self, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, name: str | None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for delta, finish in _deltas(name):
                    self._event({"id": "chatcmpl-tool", "object": "chat.completion.chunk",
                                 "created": 0, "model": "tool-model",
                                 "choices": [{"index": 0, "delta": delta,
                                              "finish_reason": finish}]})
                self._event({"id": "chatcmpl-tool", "object": "chat.completion.chunk",
                             "created": 0, "model": "tool-model", "choices": [], "usage": USAGE})
                self._chunk(b"data: [DONE]\n\n")
                self._chunk(b"")

            def _event(self, payload: dict[str, Any]) -> None:
                self._chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> ToolServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _completion(name: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None if name else "no tools"}
    if name:
        message["tool_calls"] = [{"id": "call_1", "type": "function",
                                  "function": {"name": name, "arguments": ARGUMENTS}}]
    return {"id": "chatcmpl-tool", "object": "chat.completion", "created": 0,
            "model": "tool-model", "usage": USAGE,
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if name else "stop"}]}


def _deltas(name: str | None):
    if not name:
        yield {"role": "assistant", "content": "no tools"}, None
        yield {}, "stop"
        return
    yield {"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function",
         "function": {"name": name, "arguments": ""}}]}, None
    for part in ('{"a": 1', ', "b": 2}'):
        yield {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}, None
    yield {}, "tool_calls"
