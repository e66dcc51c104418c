"""Kept only for bench/observability_overhead.py, which imports these four names from here (bench/ is outside this
change). They live in tests/fakes/ now, under the names on the right; once that import reads from tests.fakes, this
module goes."""

from tests.fakes.gateways import telemetry_settings as settings
from tests.fakes.net import free_port as closed_port
from tests.fakes.providers import ChatProvider as ScriptedProvider
from tests.fakes.tables import telemetry_table as make_table

__all__ = ["ScriptedProvider", "closed_port", "make_table", "settings"]
