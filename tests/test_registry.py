"""Every registered transport declares everything the CLI, the tests and the report rely on.

No escape hatch: a transport missing any of it fails here, not later in a run.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import re
import typing
from pathlib import Path

import msgspec
import pytest

from transports.contract import BadInputFamily, Transport
from transports.options import Options, option_names
from transports.registry import TRANSPORTS
from transports.settings import Settings, field_names

#: The baseline pushers experiments/ registers. Hard-coded here because transports/ (and its
#: tests) must not import experiments/; the experiments tests check every transport's
#: baseline against the real pusher registry.
BASELINES = {
    "tornado-ws",
    "asyncio-tcp",
    "sse-starlette",
    "aiohttp-poll",
    "aioquic-webtransport",
    "websockets",
    "aiohttp-ws",
    "starlette-stream",
    "grpc",
}
README = Path(__file__).resolve().parent.parent / "README.md"

pytestmark = pytest.mark.parametrize("transport", list(TRANSPORTS.values()), ids=list(TRANSPORTS))


def test_registered_under_its_own_name(transport: Transport) -> None:
    assert TRANSPORTS[transport.name] is transport
    assert re.fullmatch(r"[a-z][a-z0-9-]*", transport.name)


def test_every_text_field_says_something(transport: Transport) -> None:
    for text in (transport.summary, transport.endpoint, transport.resume_token):
        assert text.strip(), transport
    assert transport.keepalive.strip()
    assert "{host}" in transport.endpoint and "{port}" in transport.endpoint
    assert transport.url("::1", 1).count("[::1]:1") == 1


def test_default_port_is_its_own(transport: Transport) -> None:
    assert 1024 < transport.default_port < 65536
    others = [t.name for t in TRANSPORTS.values() if t.default_port == transport.default_port]
    assert others == [transport.name]


def test_baseline_is_a_known_pusher(transport: Transport) -> None:
    assert transport.baseline in BASELINES


def test_bad_input_family_is_one_the_scenario_knows(transport: Transport) -> None:
    assert transport.bad_input_family in typing.get_args(BadInputFamily)


def test_options_are_typed_frozen_and_round_trip_through_json(transport: Transport) -> None:
    options = transport.options
    assert isinstance(options, Options)
    kind = type(options)
    assert kind.__struct_config__.frozen and kind.__struct_config__.forbid_unknown_fields
    assert msgspec.json.decode(msgspec.json.encode(options), type=kind) == options
    assert transport.with_options({}) == options
    # --set KEY=VALUE takes settings and options alike: a name must mean one thing.
    assert not set(option_names(options)) & set(field_names())


def test_keepalive_figures_are_finite_or_off(transport: Transport) -> None:
    for settings in (Settings(), Settings(heartbeat_s=0, dead_after_s=None)):
        figures = transport.keepalive_in_force(settings)
        assert figures, "the report shows at least one keepalive figure"
        for name, value in figures.items():
            assert name.endswith("_s"), name  # seconds, as the report's units say
            assert value is None or (math.isfinite(value) and value >= 0), (name, value)


def test_fixed_settings_return_valid_settings(transport: Transport) -> None:
    fixed = transport.settings(Settings(history=77))
    assert isinstance(fixed, Settings)
    assert fixed.history == 77  # what it does not pin passes through


def test_modules_import_and_dependencies_are_installed(transport: Transport) -> None:
    assert transport.modules
    for module in transport.modules:
        importlib.import_module(module)
    for distribution in transport.dependencies:
        assert importlib.metadata.version(distribution), distribution


def test_readme_lists_it_in_the_transports_table(transport: Transport) -> None:
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `")]
    assert any(row.startswith(f"| `{transport.name}` |") for row in rows)

