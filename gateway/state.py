"""What a running gateway holds: its settings and the current provider table with the filter built from them.

A reload swaps `table` whole; a request reads it once, so it finishes on the table it started with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from .policy import ModelFilter
from .providers import ProviderTable
from .settings import Settings


@dataclass(slots=True)
class GatewayState:
    settings: Settings
    table: ProviderTable
    model_filter: ModelFilter = field(init=False)
    draining: bool = False

    def __post_init__(self) -> None:
        self.model_filter = ModelFilter.of(self.settings.allowed_models, self.settings.disallowed_models)


STATE = web.AppKey("state", GatewayState)
