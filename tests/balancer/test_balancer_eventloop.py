"""The event loop choice: uvloop when installed, a config key and a flag to turn it off."""

from __future__ import annotations

from typing import Any

import pytest

from balancer.__main__ import loop_factory
from balancer.config import ConfigError, config_from_args, from_dict

BASE: dict[str, Any] = {"listen": "127.0.0.1:0", "backends": [{"name": "p", "url": "ws://127.0.0.1:1"}]}


def test_default_is_auto_and_the_key_and_flag_override_it() -> None:
    assert from_dict(BASE).event_loop == "auto"
    assert from_dict({**BASE, "event_loop": "asyncio"}).event_loop == "asyncio"
    cfg = config_from_args(["--listen", "127.0.0.1:0", "--backend", "p=ws://127.0.0.1:1", "--event-loop", "asyncio"])
    assert cfg.event_loop == "asyncio"


@pytest.mark.parametrize("value", ["uv", "", 1, None, True])
def test_a_bad_event_loop_names_the_key(value: Any) -> None:
    with pytest.raises(ConfigError, match="event_loop"):
        from_dict({**BASE, "event_loop": value})


def test_a_bad_flag_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match="event-loop"):
        config_from_args(["--listen", "127.0.0.1:0", "--backend", "p=ws://x:1", "--event-loop", "trio"])


def test_the_loop_factory_follows_the_choice() -> None:
    uvloop = pytest.importorskip("uvloop")
    assert loop_factory("asyncio") is None
    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop
