"""The adapter commands behind ``selftaught adapters``: list, show, promote, rollback.

Thin on purpose: the registry (``finetune.registry``) owns the adapters and their
resolution; this module only gives the CLI what it shows.
"""

from __future__ import annotations

from pydantic import BaseModel

from core.errors import ConfigError
from finetune.registry import AdapterManifest, AdapterRegistry
from orchestrator.config import Config


class AdapterListing(BaseModel):
    """What ``adapters list --json`` prints."""

    adapters: list[AdapterManifest]
    """Every adapter, oldest first."""
    champion: str | None
    missing: dict[str, str] = {}
    """Adapters whose directory is gone or incomplete -> what is wrong with it."""


class Promotion(BaseModel):
    """The outcome of ``adapters promote`` or ``adapters rollback``."""

    champion: AdapterManifest | None
    """The champion now (None: the base model, after retiring a champion whose directory
    is missing)."""
    before: str | None
    """The champion before (None: there was none)."""


def registry(config: Config) -> AdapterRegistry:
    return AdapterRegistry(config.home)


def list_adapters(config: Config) -> AdapterListing:
    reg = registry(config)
    manifests = reg.list()
    champion = next((m.name for m in manifests if m.status == "champion"), None)
    missing = {m.name: problem for m in manifests if (problem := reg.problem(m.name))}
    return AdapterListing(adapters=manifests, champion=champion, missing=missing)


def show_adapter(config: Config, name: str) -> AdapterManifest:
    """The manifest of ``name``, or of the champion for ``champion``."""
    if name.strip().lower() != "champion":
        return registry(config).get(name)
    champion = registry(config).champion()
    if champion is None:
        raise ConfigError("no adapter is champion yet; promote one with "
                          "`selftaught adapters promote NAME`")
    return champion


def promote(config: Config, name: str) -> Promotion:
    """Make ``name`` champion; refused when its directory is missing or incomplete."""
    reg = registry(config)
    before = reg.champion()
    reg.path(name)  # ConfigError naming what is wrong with its directory
    promoted = reg.promote(name)
    return Promotion(champion=promoted, before=before.name if before else None)


def rollback(config: Config) -> Promotion:
    """Restore the champion's predecessor. A champion whose directory is missing and that
    replaced none is retired instead, so runs fall back to the base model."""
    reg = registry(config)
    before = reg.champion()
    if before is not None and before.previous_champion is None and reg.problem(before.name):
        reg.retire(before.name)
        return Promotion(champion=None, before=before.name)
    restored = reg.rollback()
    return Promotion(champion=restored, before=before.name if before else None)
