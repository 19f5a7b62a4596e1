"""The ``ChatModel`` every node, critic and trainer uses: litellm behind one seam.

``make_chat_model(model_id)`` is the one way to get a model. Any litellm id works
(``openai/gpt-4o-mini``, ``ollama/qwen2.5``, ``hosted_vllm/...``) and so does the
embedded ``local/smollm2`` / ``local/PATH`` (see ``agents.local``).

Error policy (the contract callers rely on):

* transient provider failures (rate limit, 5xx, timeouts, connection errors) are
  retried ``max_retries`` times with exponential backoff and jitter, then raised as
  ``TransientModelError``;
* a rejected key or an unknown provider/model raises ``ConfigError`` (the user must fix
  the configuration);
* any other provider failure raises ``ModelError`` carrying the provider's message;
* errors raised by selftaught's own code (the local provider) pass through unchanged.

LoRA adapters (``GenerationParams.adapter``) are applied by the local provider only.
For any other provider an adapter raises ``ConfigError``: serving adapters by name
(e.g. vLLM) is done by choosing the model id, not here.

litellm is imported lazily (it costs seconds), with its remote cost map and its own
logging switched off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

from agents.local.resolve import is_local, resolve_local_model
from agents.model import ChatModel, Completion, GenerationParams, Message, Usage
from core.errors import ConfigError, ModelError, SelftaughtError, TransientModelError

# Before litellm is imported anywhere: otherwise it fetches the cost map on import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

DEFAULT_TIMEOUT_S = 120.0
MAX_BACKOFF_S = 30.0
_TRANSIENT_STATUS = {408, 409, 425, 429}

_setup_lock = threading.Lock()
_setup_done = False


def litellm_module():
    """litellm, configured once per process: quiet, no telemetry, ``local`` registered."""
    global _setup_done
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    with _setup_lock:
        if not _setup_done:
            litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banners
            litellm.set_verbose = False
            litellm.telemetry = False
            litellm.drop_params = True  # e.g. `seed` for providers that lack it
            for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
            # litellm builds a provider's coroutine on an executor thread and awaits it back
            # on the event loop; a call cancelled in between (Ctrl-C, a timeout) leaves it
            # never started, so nothing was sent and Python's warning reports no lost work.
            warnings.filterwarnings("ignore", category=RuntimeWarning,
                                    message=r"coroutine '\w+\.acompletion' was never awaited")
            from agents.local.provider import register

            register(litellm)
            _setup_done = True
    return litellm


def backoff_delay(attempt: int, base_s: float, cap_s: float = MAX_BACKOFF_S, rand=random.random):
    """Seconds to wait before retry number ``attempt`` (0-based): ``base_s * 2**attempt``
    capped at ``cap_s``, times a jitter factor in [0.5, 1.5) so clients spread out."""
    return min(cap_s, base_s * (2**attempt)) * (0.5 + rand())


class LiteLLMChatModel:
    """A ``ChatModel`` over ``litellm.acompletion``. Safe to share between tasks.

    ``timeout_s`` bounds each attempt (None: no bound); ``max_retries`` is the number
    of retries after the first attempt, for transient errors only; ``backoff_s`` is the
    first retry's base delay. ``extra`` is passed to litellm on every call (e.g.
    ``api_base``). ``Usage.latency_s`` covers the whole call, retries included.
    """

    def __init__(
        self,
        model_id: str,
        *,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        extra: dict[str, Any] | None = None,
    ):
        if max_retries < 0 or backoff_s < 0:
            raise ConfigError("max_retries and backoff_s must not be negative")
        self.model_id = model_id
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.extra = dict(extra or {})
        self.local = is_local(model_id)

    async def complete(
        self, messages: list[Message], params: GenerationParams | None = None
    ) -> Completion:
        params = params or GenerationParams()
        kwargs = self._kwargs(messages, params)
        litellm = litellm_module()
        started = time.perf_counter()
        faults: list[str] = []
        for attempt in range(self.max_retries + 1):
            try:
                response = await self._bounded(litellm.acompletion(**kwargs))
                choice = response.choices[0]  # in the try: no choices is a provider error
                break
            except Exception as e:
                error = self._classify(e)
                if not isinstance(error, TransientModelError) or attempt == self.max_retries:
                    raise error from e
                faults.append(f"try {attempt + 1}: {error}")
            await asyncio.sleep(backoff_delay(attempt, self.backoff_s))
        usage = getattr(response, "usage", None)
        return Completion(
            text=choice.message.content or "",
            model=self.model_id,
            adapter=params.adapter,
            finish_reason=choice.finish_reason,
            usage=Usage(
                prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                latency_s=time.perf_counter() - started,
                cost_usd=_cost(litellm, response),
                faults=tuple(faults),
            ),
        )

    async def stream(
        self, messages: list[Message], params: GenerationParams | None = None
    ) -> AsyncIterator[str]:
        """Yield text pieces. Transient failures are retried only before the first
        piece; after that any failure is raised at once, classified as for
        ``complete`` (a reply cannot be replayed halfway)."""
        async for chunk in self._chunks(messages, params or GenerationParams()):
            piece = chunk.choices[0].delta.content if chunk.choices else None
            if piece:
                yield piece

    async def complete_streaming(
        self, messages: list[Message], params: GenerationParams | None = None, *,
        on_piece: Callable[[str], None],
    ) -> Completion:
        """``complete``, streamed: each piece of the reply goes to ``on_piece`` as it
        arrives, and the whole reply comes back with its usage (asked of the provider
        with ``stream_options.include_usage``; zeros where a provider gives none).
        Errors as for ``stream``."""
        params = params or GenerationParams()
        started = time.perf_counter()
        pieces: list[str] = []
        finish_reason = usage = None
        async for chunk in self._chunks(messages, params, include_usage=True):
            usage = getattr(chunk, "usage", None) or usage
            if not chunk.choices:
                continue
            finish_reason = chunk.choices[0].finish_reason or finish_reason
            piece = chunk.choices[0].delta.content
            if piece:
                pieces.append(piece)
                on_piece(piece)
        prompt_tokens = getattr(usage, "prompt_tokens", 0) or 0
        completion_tokens = getattr(usage, "completion_tokens", 0) or 0
        return Completion(
            text="".join(pieces), model=self.model_id, adapter=params.adapter,
            finish_reason=finish_reason,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                        latency_s=time.perf_counter() - started,
                        cost_usd=_token_cost(self.model_id, prompt_tokens, completion_tokens)),
        )

    async def _chunks(
        self, messages: list[Message], params: GenerationParams, *, include_usage: bool = False
    ) -> AsyncIterator[Any]:
        """The provider's stream chunks, with the retry policy of ``stream``."""
        kwargs = {**self._kwargs(messages, params), "stream": True}
        if include_usage:
            kwargs["stream_options"] = {"include_usage": True}
        litellm = litellm_module()
        for attempt in range(self.max_retries + 1):
            sent_any = False
            try:
                chunks = await self._bounded(litellm.acompletion(**kwargs))
                iterator = chunks.__aiter__()
                while True:
                    try:
                        chunk = await self._bounded(iterator.__anext__())
                    except StopAsyncIteration:
                        return
                    sent_any = sent_any or bool(chunk.choices and chunk.choices[0].delta.content)
                    yield chunk
            except Exception as e:
                error = self._classify(e)
                retry = isinstance(error, TransientModelError) and not sent_any
                if not retry or attempt == self.max_retries:
                    raise error from e
            await asyncio.sleep(backoff_delay(attempt, self.backoff_s))

    # -- helpers -----------------------------------------------------------------------

    def _kwargs(self, messages: list[Message], params: GenerationParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            **self.extra,
            "model": self.model_id,
            "messages": [dict(m) for m in messages],
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
        }
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if self.local:
            if params.adapter is not None:
                kwargs["adapter"] = params.adapter
        else:
            if params.adapter is not None:
                raise ConfigError(
                    f"Adapter `{params.adapter}` was requested for `{self.model_id}`, but only "
                    "`local/...` models apply LoRA adapters per request. For a vLLM server, "
                    "select the adapter by model name (hosted_vllm/ADAPTER) instead."
                )
            kwargs["max_retries"] = 0  # we retry; the provider SDK must not retry too
            if self.timeout_s is not None:
                kwargs["timeout"] = self.timeout_s
        return kwargs

    async def _bounded(self, awaitable):
        if self.timeout_s is None:
            return await awaitable
        return await asyncio.wait_for(awaitable, self.timeout_s)

    def _classify(self, e: BaseException) -> SelftaughtError:
        """Map any exception from a call to the error the caller should see."""
        own = _own_error(e)
        if own is not None:
            return own
        message = f"{self.model_id}: {getattr(e, 'message', None) or e}"
        if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
            return TransientModelError(f"{self.model_id}: no reply within {self.timeout_s} s")
        import openai

        litellm = litellm_module()
        if isinstance(e, openai.AuthenticationError):
            return ConfigError(f"{message}. Check the provider's API key environment variable.")
        if isinstance(e, litellm.exceptions.LiteLLMUnknownProvider) or "LLM Provider NOT" in str(e):
            return ConfigError(f"{message}. Model ids look like `provider/model`.")
        if isinstance(e, (openai.APIConnectionError, openai.RateLimitError)):  # incl. timeouts
            return TransientModelError(message)
        status = getattr(e, "status_code", None)
        if isinstance(status, int) and (status >= 500 or status in _TRANSIENT_STATUS):
            return TransientModelError(message)
        if _is_network_error(e):
            return TransientModelError(message)
        return ModelError(message)


def _own_error(e: BaseException | None) -> SelftaughtError | None:
    """Our own error, if one is in the chain: litellm wraps what a custom provider
    raises (as ``APIConnectionError``, which would otherwise look transient)."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, SelftaughtError):
            return e
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def _is_network_error(e: BaseException) -> bool:
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx comes with litellm
        return isinstance(e, ConnectionError)
    return isinstance(e, (ConnectionError, httpx.TransportError))


def _cost(litellm, response) -> float:
    """USD cost from litellm's (local) cost map; 0 for models it does not price."""
    try:
        return float(litellm.completion_cost(completion_response=response) or 0.0)
    except Exception:
        return 0.0


def missing_credentials(model_id: str) -> list[str]:
    """The credential environment variables (``*_KEY``, ``*_TOKEN``) that ``model_id``'s
    provider needs and that are not set, per litellm's own table (offline); [] for
    ``local/...``, for providers that need none (ollama, hosted_vllm), and when any one of
    several alternatives is set."""
    if is_local(model_id):
        return []
    try:
        found = litellm_module().validate_environment(model_id)
    except Exception:  # an id litellm cannot place: make_chat_model says so
        return []
    if found.get("keys_in_environment"):
        return []
    return [k for k in found.get("missing_keys", []) if k.endswith(("_KEY", "_TOKEN"))]


def _token_cost(model_id: str, prompt_tokens: int, completion_tokens: int) -> float:
    """USD cost of a streamed call from litellm's (local) price map; 0 when unpriced."""
    try:
        prompt, completion = litellm_module().cost_per_token(
            model=model_id, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        return float(prompt + completion)
    except Exception:
        return 0.0


def make_chat_model(
    model_id: str,
    *,
    timeout_s: float | None = None,
    max_retries: int = 3,
    backoff_s: float = 1.0,
    extra: dict[str, Any] | None = None,
) -> ChatModel:
    """The ``ChatModel`` for a litellm id or ``local/...``. Checks what it can without
    network access: a local model must be on disk, a remote id must name a provider
    litellm knows (``ConfigError`` otherwise). ``timeout_s`` defaults to 120 s per
    attempt for remote providers and none for local ones (a long queue is not a
    provider fault)."""
    model_id = (model_id or "").strip()
    if not model_id:
        raise ConfigError("No model id given: use e.g. `local/smollm2` or `openai/gpt-4o-mini`.")
    if is_local(model_id):
        resolve_local_model(model_id)
    else:
        litellm = litellm_module()
        try:
            litellm.get_llm_provider(model_id)
        except Exception as e:
            raise ConfigError(
                f"Unknown model id `{model_id}`: litellm ids look like `provider/model` "
                "(e.g. `openai/gpt-4o-mini`, `ollama/qwen2.5`), or use `local/smollm2`."
            ) from e
        if timeout_s is None:
            timeout_s = DEFAULT_TIMEOUT_S
    return LiteLLMChatModel(
        model_id, timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s, extra=extra
    )
