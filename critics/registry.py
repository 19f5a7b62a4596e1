"""The verifier registry and :func:`verify`, the one call everyone else makes.

A verifier type is a name (``exact``, ``numeric``, ...) bound to a factory that builds a
:class:`~critics.verdict.Verifier`. Built-ins live in ``critics.verifiers_text``,
``critics.verifiers_code`` and ``critics.verifiers_external``; they register on first
use, so importing this module stays cheap.

Contract of every built-in: a bad *answer* gives a failing :class:`Verdict` (never an
exception); a bad *spec* raises :class:`~core.errors.ConfigError` naming the param; feedback
never contains the privileged reference (that goes in ``details`` at most).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ValidationError

from critics.verdict import Verdict, Verifier
from core.errors import ConfigError
from core.records import VerifierSpec

if TYPE_CHECKING:
    from agents.model import ChatModel

VerifierFactory = Callable[..., Verifier]
"""Called as ``factory(judge_model=...)``; returns a verifier."""

_REGISTRY: dict[str, VerifierFactory] = {}
_BUILTIN_MODULES = ("critics.verifiers_text", "critics.verifiers_code",
                    "critics.verifiers_external", "critics.verifiers_person")
_builtins_loaded = False


def register(type_name: str) -> Callable[[VerifierFactory], VerifierFactory]:
    """Class decorator: make ``type_name`` resolve to the decorated factory.

    The factory is called with the keyword ``judge_model`` (subclasses of
    :class:`ParamsVerifier` accept it). Registering a name twice replaces it, so a
    plugin may override a built-in on purpose.
    """

    def decorator(factory: VerifierFactory) -> VerifierFactory:
        _REGISTRY[type_name] = factory
        return factory

    return decorator


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        _builtins_loaded = True


def verifier_types() -> list[str]:
    """All registered type names, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_verifier(type_name: str, *, judge_model: ChatModel | None = None) -> Verifier:
    """The verifier for ``type_name``. Unknown names raise ``ConfigError`` listing the
    valid ones. ``judge_model`` is handed to verifiers that call a model (``llm_judge``)."""
    _load_builtins()
    factory = _REGISTRY.get(type_name)
    if factory is None:
        raise ConfigError(
            f"unknown verifier type {type_name!r}; valid types: {', '.join(sorted(_REGISTRY))}"
        )
    return factory(judge_model=judge_model)


def check_spec(spec: VerifierSpec) -> None:
    """``ConfigError`` for a spec :func:`verify` would refuse (unknown type, bad params),
    found without verifying anything, so a task file is checked when it is loaded."""
    verifier = get_verifier(spec.type)
    if isinstance(verifier, ParamsVerifier):
        verifier.parse_params(spec)


async def verify(
    answer: str, spec: VerifierSpec, *, judge_model: ChatModel | None = None
) -> Verdict:
    """Check an (already extracted) ``answer`` against ``spec``.

    Raises ``ConfigError`` for an unknown type or bad params, ``SandboxError`` when the
    sandbox cannot run, ``ModelError`` when the judge model fails.
    """
    return await get_verifier(spec.type, judge_model=judge_model).verify(answer, spec)


class ParamsVerifier:
    """Base for verifiers whose params are a pydantic model.

    Subclasses set ``Params`` (with ``extra="forbid"``) and implement :meth:`check`;
    validation errors become a ``ConfigError`` naming the offending param.
    """

    type_name: ClassVar[str] = "?"
    Params: ClassVar[type[BaseModel]]

    def __init__(self, *, judge_model: ChatModel | None = None) -> None:
        self.judge_model = judge_model

    def parse_params(self, spec: VerifierSpec) -> Any:
        try:
            return self.Params.model_validate(spec.params)
        except ValidationError as error:
            raise ConfigError(f"bad params for verifier {spec.type!r}: "
                              f"{describe_validation_error(error)}") from None

    async def verify(self, answer: str, spec: VerifierSpec) -> Verdict:
        params = self.parse_params(spec)
        return await self.check(answer if isinstance(answer, str) else str(answer), params)

    async def check(self, answer: str, params: Any) -> Verdict:  # pragma: no cover
        raise NotImplementedError


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, each naming the param: ``param 'x': Field required``."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "params"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown param"
        parts.append(f"param {where!r}: {message}")
    return "; ".join(parts)


def quote(text: str, limit: int = 80) -> str:
    """``text`` quoted for feedback, shortened to ``limit`` characters."""
    text = text.strip()
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)
