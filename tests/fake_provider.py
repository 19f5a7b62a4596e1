"""A loopback OpenAI-compatible chat server that injects faults, for reliability tests.

Start it in a test (or a benchmark) and point ``--model openai/NAME`` at it with
``OPENAI_BASE_URL=server.base_url`` (and any ``OPENAI_API_KEY``)::

    with FakeOpenAI(faults=["429", "ok", "truncate"]) as server:
        cli("run", "tasks.jsonl", "--model", "openai/fake", OPENAI_BASE_URL=server.base_url, ...)
    server.injected   # Counter of faults served

It listens on 127.0.0.1 only (tests mark themselves ``enable_socket`` + loopback
``allow_hosts``). Each request to ``/v1/chat/completions`` takes the next fault from
``faults`` (a list, consumed in order, then ``"ok"``; or a function of the request
number and body). Faults:

* ``ok``: a normal reply (``reply(messages)``; streamed as SSE when asked);
* ``429`` / ``500``: that HTTP status with an OpenAI-shaped error body;
* ``timeout``: no answer for ``hang_s`` seconds (longer than the client's timeout);
* ``truncate``: the body (or the stream) is cut off halfway and the connection closed;
* ``invalid_json``: status 200 with a body that is not JSON;
* ``reset``: the connection is closed without any reply;
* ``401``: a rejected key, echoing the key it was sent, as real providers do
  ("Incorrect API key provided: sk-...") - the way a key reaches an error message.

Every request is recorded (``requests``: number, fault, whether streamed, the body) so a
test can count retries and measure the gaps between them (backoff).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("ok", "429", "500", "timeout", "truncate", "invalid_json", "reset", "401")


@dataclass
class Request:
    number: int
    fault: str
    stream: bool
    body: dict[str, Any]
    at: float
    """time.monotonic() when it arrived."""


def default_reply(messages: list[dict[str, Any]]) -> str:
    return "I worked it out.\nAnswer: 42"


@dataclass
class FakeOpenAI:
    faults: Iterable[str] | Callable[[int, dict[str, Any]], str] = ()
    reply: Callable[[list[dict[str, Any]]], str] = default_reply
    hang_s: float = 30.0
    delay_s: float = 0.0
    """Seconds each normal reply takes (a slow model, so work is in flight long enough
    to be interrupted)."""
    requests: list[Request] = field(default_factory=list)
    injected: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if not callable(self.faults):
            self._queue = list(self.faults)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> FakeOpenAI:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _next(self, body: dict[str, Any]) -> Request:
        with self._lock:
            number = len(self.requests)
            if callable(self.faults):
                fault = self.faults(number, body)
            else:
                fault = self._queue.pop(0) if self._queue else "ok"
            if fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")
            request = Request(number, fault, bool(body.get("stream")), body, time.monotonic())
            self.requests.append(request)
            if fault != "ok":
                self.injected[fault] += 1
            return request


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-reply (the kill tests) is expected, not worth a traceback.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        request = self.fake._next(body)
        fault = request.fault
        if fault == "reset":
            self.close_connection = True
            return
        if fault == "timeout":
            time.sleep(self.fake.hang_s)
            return
        if fault == "401":
            sent = self.headers.get("Authorization", "").removeprefix("Bearer ")
            self._send(401, json.dumps({"error": {"message": f"Incorrect API key provided: {sent}",
                                                  "type": "invalid_request_error",
                                                  "code": "invalid_api_key"}}).encode())
            return
        if fault in ("429", "500"):
            message = {"429": "Rate limit reached, slow down", "500": "The server had an error"}[fault]
            self._send(int(fault), json.dumps({"error": {"message": message, "type": "fake",
                                                         "code": fault}}).encode())
            return
        if fault == "invalid_json":
            self._send(200, b"{this is not json")
            return
        time.sleep(self.fake.delay_s)
        text = self.fake.reply(body.get("messages", []))
        if request.stream:
            self._stream(text, truncate=fault == "truncate")
            return
        payload = json.dumps(_completion(text, body)).encode()
        if fault == "truncate":
            self._send(200, payload, cut=len(payload) // 2)
        else:
            self._send(200, payload)

    def _send(self, status: int, payload: bytes, *, cut: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload if cut is None else payload[:cut])
        self.wfile.flush()
        self.close_connection = True

    def _stream(self, text: str, *, truncate: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        pieces = [text[i:i + 8] for i in range(0, len(text), 8)] or [""]
        if truncate:
            pieces = pieces[: max(1, len(pieces) // 2)]
        for piece in pieces:
            chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                     "model": "fake", "choices": [{"index": 0, "delta": {"content": piece},
                                                   "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        if not truncate:
            last = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                    "model": "fake", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            self.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
            self.wfile.flush()
        self.close_connection = True


def _completion(text: str, body: dict[str, Any]) -> dict[str, Any]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion = len(text.split())
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0,
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    }
