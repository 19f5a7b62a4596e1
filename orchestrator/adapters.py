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


class Promotion(BaseModel):
    """The outcome of ``adapters promote`` or ``adapters rollback``."""

    champion: AdapterManifest
    """The champion now."""
    before: str | None
    """The champion before (None: there was none)."""


def registry(config: Config) -> AdapterRegistry:
    return AdapterRegistry(config.home)


def list_adapters(config: Config) -> AdapterListing:
    manifests = registry(config).list()
    champion = next((m.name for m in manifests if m.status == "champion"), None)
    return AdapterListing(adapters=manifests, champion=champion)


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
    before = registry(config).champion()
    promoted = registry(config).promote(name)
    return Promotion(champion=promoted, before=before.name if before else None)


def rollback(config: Config) -> Promotion:
    before = registry(config).champion()
    restored = registry(config).rollback()
    return Promotion(champion=restored, before=before.name if before else None)
