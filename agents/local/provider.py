"""The embedded model as a litellm custom provider named ``local``.

After ``register(litellm)``, ``litellm.acompletion(model="local/smollm2", ...)`` (or
``local/PATH``) is served in-process by the batching engine. Besides the usual
``temperature``, ``max_tokens`` (or ``max_completion_tokens``), ``stop`` and ``seed``,
it takes one extra keyword, ``adapter`` (a PEFT LoRA directory), which litellm passes
through to ``optional_params``. A missing temperature means greedy. Other keywords are
ignored.

Errors: ``ConfigError`` for a missing model or adapter, ``ModelError`` for anything
else; litellm wraps them (``APIConnectionError``) with the original as ``__context__``,
which ``agents.litellm_model`` unwraps.
"""

from __future__ import annotations

import asyncio
import os
import queue
from collections.abc import AsyncIterator, Iterator

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm: no network

import litellm  # noqa: E402  (this module is itself only imported lazily)
from litellm import CustomLLM  # noqa: E402

from agents.local.engine import get_engine, validate_adapter  # noqa: E402
from agents.local.request import GenRequest, GenResult  # noqa: E402
from agents.local.resolve import LOCAL_PREFIX  # noqa: E402
from core.errors import ModelError, SelftaughtError  # noqa: E402

PROVIDER = "local"
_DONE = object()


class LocalProvider(CustomLLM):
    """litellm handler for ``local/...`` ids (sync and async, plain and streaming)."""

    def completion(self, model, messages, model_response, optional_params, **_):
        future = _submit(model, messages, optional_params)
        return _fill(model_response, model, _result(future.result))

    async def acompletion(self, model, messages, model_response, optional_params, **_):
        future = _submit(model, messages, optional_params)
        result = await _await(asyncio.wrap_future(future))
        return _fill(model_response, model, result)

    def streaming(self, model, messages, model_response, optional_params, **_) -> Iterator:
        pieces: queue.Queue = queue.Queue()
        future = _submit(model, messages, optional_params, on_delta=pieces.put)
        future.add_done_callback(lambda _: pieces.put(_DONE))
        try:
            while (piece := pieces.get()) is not _DONE:
                yield _chunk(piece)
            yield _last_chunk(_result(future.result))
        finally:
            future.cancel()

    async def astreaming(
        self, model, messages, model_response, optional_params, **_
    ) -> AsyncIterator:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()

        def put(item) -> None:  # called on the worker thread
            try:
                loop.call_soon_threadsafe(pieces.put_nowait, item)
            except RuntimeError:
                pass  # the consumer's loop has closed; nobody is listening

        future = _submit(model, messages, optional_params, on_delta=put)
        future.add_done_callback(lambda _: put(_DONE))
        try:
            while (piece := await pieces.get()) is not _DONE:
                yield _chunk(piece)
            yield _last_chunk(await _await(asyncio.wrap_future(future)))
        finally:
            future.cancel()  # a consumer that stopped early frees its queue slot


def register(litellm_module=litellm) -> None:
    """Add the ``local`` provider to litellm (idempotent; call under a lock)."""
    providers = litellm_module.custom_provider_map
    if not any(item.get("provider") == PROVIDER for item in providers):
        providers.append({"provider": PROVIDER, "custom_handler": LocalProvider()})
    litellm_module.utils.custom_llm_setup()


def _submit(model: str, messages, params: dict | None, on_delta=None):
    params = params or {}
    try:
        stop = params.get("stop") or ()
        request = GenRequest(
            messages=[_plain(m) for m in messages],
            max_tokens=int(params.get("max_tokens") or params.get("max_completion_tokens") or 256),
            temperature=float(params.get("temperature") or 0.0),
            stop=(stop,) if isinstance(stop, str) else tuple(stop),
            seed=params.get("seed"),
            adapter=validate_adapter(params.get("adapter")),
            on_delta=on_delta,
        )
        return get_engine(model).submit(request)
    except SelftaughtError:
        raise
    except Exception as e:
        raise ModelError(f"Bad request for {LOCAL_PREFIX}{model}: {e}") from e


def _plain(message) -> dict[str, str]:
    """litellm may hand messages as objects and content as a list of parts."""
    message = message if isinstance(message, dict) else dict(message)
    content = message.get("content") or ""
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return {"role": str(message.get("role", "user")), "content": str(content)}


async def _await(awaitable):
    try:
        return await awaitable
    except SelftaughtError:
        raise
    except Exception as e:
        raise ModelError(f"Local model failed: {type(e).__name__}: {e}") from e


def _result(get) -> GenResult:
    try:
        return get()
    except SelftaughtError:
        raise
    except Exception as e:
        raise ModelError(f"Local model failed: {type(e).__name__}: {e}") from e


def _fill(model_response, model: str, result: GenResult):
    model_response.choices[0].message.content = result.text
    model_response.choices[0].finish_reason = result.finish_reason
    model_response.model = LOCAL_PREFIX + model
    model_response.usage = litellm.Usage(
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        total_tokens=result.prompt_tokens + result.completion_tokens,
    )
    return model_response


def _chunk(text: str) -> dict:
    return {"text": text, "is_finished": False, "finish_reason": "", "usage": None, "index": 0}


def _last_chunk(result: GenResult) -> dict:
    usage = {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }
    return {
        "text": "",
        "is_finished": True,
        "finish_reason": result.finish_reason,
        "usage": usage,
        "index": 0,
    }
