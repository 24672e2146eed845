"""Security of the reference balancer: what /status reveals, who picks the upstream host,
and where the admin endpoint listens. Real processes and sockets throughout.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest
import pytest_asyncio
from balancer_support import (
    DEFAULT_KEEPALIVE,
    OP_TEXT,
    BalancerProc,
    client,
    echo_backend_server,
    encode_frame,
    free_port,
    launch_balancer,
    raw_client,
    recv_json,
    upgrade_request,
    ws_url,
)
from prometheus_client.parser import text_string_to_metric_families

from balancer.admin import AdminServer
from balancer.config import Address, ConfigError, from_dict
from balancer.events import EventLog
from balancer.pool import Backend, is_origin_form
from balancer.server import Balancer

MARKER = "c0nfidential-7f3a"


def string_values(node: Any) -> list[str]:
    """Every string value (not key) in a JSON document."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in string_values(value)]
    if isinstance(node, list):
        return [s for item in node for s in string_values(item)]
    return []


async def test_status_and_metrics_carry_no_message_contents(balancer_factory: Any, echo_backends: Any) -> None:
    primary = await echo_backends("primary")
    bal: BalancerProc = await balancer_factory([("primary", ws_url(primary))], **DEFAULT_KEEPALIVE)
    async with client(bal.url + f"/room?secret={MARKER}") as ws:
        await ws.send(f"text {MARKER}")
        assert MARKER in (await recv_json(ws))["msg"]
        await ws.send(f"binary {MARKER}".encode())
        await ws.recv()
        status_code, status_body = await bal.get("/status")
        metrics_code, metrics_body = await bal.get("/metrics")
    assert (status_code, metrics_code) == (200, 200)
    status = json.loads(status_body)
    assert status["sessions"] == 1, "the session was live while /status was read"
    for body in (status_body, metrics_body):
        assert MARKER.encode() not in body
    # Only counts and names: every string in /status is a configured backend's name.
    assert set(string_values(status)) <= {"primary"}, string_values(status)
    for family in text_string_to_metric_families(metrics_body.decode()):
        for sample in family.samples:
            assert isinstance(sample.value, float)
            assert set(sample.labels.values()) <= {"primary", "true", "false", *status["tables"], *status["states"]}
    await bal.wait_empty()


# Attempts to make the balancer connect to the decoy: {DECOY} is its host:port.
HOST_PICKING = {
    "host_header": ("/play", [("Host", "{DECOY}")]),
    "x_forwarded_host": ("/play", [("X-Forwarded-Host", "{DECOY}"), ("X-Forwarded-Proto", "ws")]),
    "forwarded_header": ("/play", [("Forwarded", "host={DECOY};proto=ws")]),
    "scheme_relative_path": ("//{DECOY}/play", []),
    "absolute_uri": ("ws://{DECOY}/play", []),
    "userinfo_path": ("@{DECOY}/play", []),
    "authority_path": ("{DECOY}/play", []),
}


@dataclass
class HostPickingSetup:
    bal: BalancerProc
    decoy_authority: str
    seen_by_primary: list[str]
    seen_by_decoy: list[str]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def host_picking(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[HostPickingSetup]:
    """One balancer for every host-picking case, so that later cases also show the earlier
    ones left nothing behind; each case clears the backends' logs."""
    seen_by_primary: list[str] = []
    seen_by_decoy: list[str] = []
    async with (
        echo_backend_server("primary", log=seen_by_primary) as primary,
        echo_backend_server("decoy", log=seen_by_decoy) as decoy,
    ):
        bal = await launch_balancer(
            tmp_path_factory.mktemp("host-picking"), "balancer", [("primary", ws_url(primary))], **DEFAULT_KEEPALIVE
        )
        try:
            authority = f"127.0.0.1:{decoy.sockets[0].getsockname()[1]}"
            yield HostPickingSetup(bal, authority, seen_by_primary, seen_by_decoy)
        finally:
            bal.stop()


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", sorted(HOST_PICKING))
async def test_client_cannot_pick_the_upstream_host(host_picking: HostPickingSetup, case: str) -> None:
    bal, decoy_authority = host_picking.bal, host_picking.decoy_authority
    host_picking.seen_by_primary.clear()
    host_picking.seen_by_decoy.clear()
    baseline = await bal.baseline_fds()
    path_template, headers_template = HOST_PICKING[case]
    path = path_template.format(DECOY=decoy_authority)
    headers = [(name, value.format(DECOY=decoy_authority)) for name, value in headers_template]
    request = upgrade_request(path, extra=[h for h in headers if h[0] != "Host"])
    if any(name == "Host" for name, _ in headers):
        request = request.replace(b"Host: 127.0.0.1", f"Host: {decoy_authority}".encode())
    async with raw_client(bal.listen) as raw:
        await raw.send(request)
        status, head = await raw.response_head()
        if path.startswith("/"):
            # A path: relayed unchanged, to the configured backend.
            assert status == 101, head
            await raw.send(encode_frame(OP_TEXT, b"where am I?"))
            frame = await raw.frame()
            assert frame is not None
            assert json.loads(frame.payload) == {"server": "primary", "path": path, "msg": "where am I?"}
        else:
            # Not a path at all: refused before any upstream is chosen.
            assert status == 400, head
    assert host_picking.seen_by_decoy == []
    if path.startswith("/"):
        assert host_picking.seen_by_primary == [path]
    status_doc = await bal.status()
    assert [b["healthy"] for b in status_doc["backends"]] == [True], "a client's request marked a backend down"
    await bal.assert_recovered(baseline)
    assert host_picking.seen_by_decoy == []


# -- what a client's request target may be (pure) ---------------------------------------------


@pytest.mark.parametrize(
    ("target", "upstream"),
    [
        ("/", "ws://10.0.0.5:90/"),
        ("/play?room=1&x=%20", "ws://10.0.0.5:90/play?room=1&x=%20"),
        ("//evil:80/x", "ws://10.0.0.5:90//evil:80/x"),  # a path whose first segment is empty
        ("/x#@evil:80", "ws://10.0.0.5:90/x#@evil:80"),
    ],
)
def test_upstream_url_keeps_the_backends_authority(target: str, upstream: str) -> None:
    assert is_origin_form(target)
    url = Backend("b", "ws://10.0.0.5:90/ignored").target(target)
    assert url == upstream
    assert urlsplit(url).netloc == "10.0.0.5:90"


@pytest.mark.parametrize("target", ["", "@evil:80/x", "00/x", "ws://evil:80/x", "evil:80/x", "*", "?q=1"])
def test_a_target_that_is_not_a_path_never_becomes_an_upstream_url(target: str) -> None:
    assert not is_origin_form(target)
    with pytest.raises(ValueError, match="not a path"):
        Backend("b", "ws://10.0.0.5:90").target(target)


def config_with(**extra: Any) -> dict[str, Any]:
    return {"listen": "127.0.0.1:1", "backends": [{"name": "a", "url": "ws://127.0.0.1:2"}], **extra}


# -- the admin endpoint ------------------------------------------------------------------------


@pytest.mark.parametrize("admin", [":9000", "9000", " 9000 "])
def test_admin_without_a_host_means_loopback(admin: str) -> None:
    assert from_dict(config_with(admin=admin)).admin == Address("127.0.0.1", 9000)
    assert from_dict(config_with()).admin is None, "no admin key, no admin endpoint"


async def test_admin_without_a_host_listens_on_loopback_only(balancer_factory: Any, echo_backends: Any) -> None:
    primary = await echo_backends("primary")
    port = free_port()
    bal: BalancerProc = await balancer_factory([("primary", ws_url(primary))], admin=f":{port}")
    listening = [c.laddr for c in bal.open_sockets() if c.status == psutil.CONN_LISTEN]
    assert [addr.ip for addr in listening if addr.port == port] == ["127.0.0.1"], listening
    assert (await bal.get("/healthz"))[0] == 200


@pytest.mark.parametrize(
    ("admin", "token", "unguarded"),
    [
        ("0.0.0.0:9000", None, True),
        ("[::]:9000", None, True),
        ("192.0.2.7:9000", None, True),
        ("admin.example:9000", None, True),
        ("0.0.0.0:9000", "t0ken", False),
        ("127.0.0.1:9000", None, False),
        ("127.3.4.5:9000", None, False),
        ("[::1]:9000", None, False),
        ("localhost:9000", None, False),
        (":9000", None, False),
        (None, None, False),
    ],
)
def test_an_exposed_admin_endpoint_without_a_token_counts_as_unguarded(
    admin: str | None, token: str | None, unguarded: bool
) -> None:
    """The balancer logs a warning at start-up for these (Balancer.start)."""
    extra = {"admin": admin} if admin else {}
    if token:
        extra["admin_token"] = token
    assert from_dict(config_with(**extra)).admin_unguarded is unguarded


def test_admin_token_is_optional_and_kept_out_of_repr() -> None:
    assert from_dict(config_with()).admin_token is None
    config = from_dict(config_with(admin_token="abc.DEF-_~+/=="))
    assert config.admin_token == "abc.DEF-_~+/=="
    assert "abc.DEF" not in repr(config)


@pytest.mark.parametrize("token", ["", "two words", "line\r\nX-Injected: 1", "caf\u00e9", "a=b", 42, ["t"]])
def test_a_bad_admin_token_is_a_config_error_that_does_not_quote_it(token: Any) -> None:
    with pytest.raises(ConfigError, match=r"^admin_token: expected") as info:
        from_dict(config_with(admin_token=token))
    if isinstance(token, str) and token:
        assert token not in str(info.value)


TOKEN = "s3cret-T0ken_~+/=="


@pytest.mark.parametrize(
    ("authorization", "allowed"),
    [
        ([f"Bearer {TOKEN}"], True),
        ([f"bearer   {TOKEN} "], True),  # the scheme is case-insensitive (RFC 9110, section 11.1)
        ([], False),
        (["Bearer wrong"], False),
        ([f"Bearer {TOKEN}x"], False),
        ([f"Bearer {TOKEN[:-1]}"], False),
        ([f"Basic {TOKEN}"], False),
        ([TOKEN], False),
        (["Bearer"], False),
        ([f"Bearer {TOKEN}", f"Bearer {TOKEN}"], False),  # one credential, not a choice of several
        (["Bearer caf\udcc3\udca9"], False),  # undecodable bytes, as websockets hands them over
    ],
)
def test_admin_token_check(authorization: list[str], allowed: bool) -> None:
    admin: AdminServer = Balancer(from_dict(config_with(admin_token=TOKEN)), EventLog()).admin
    for path in ("/status", "/metrics", "/status?x=1"):
        assert admin.authorized(path, authorization) is allowed
    for path in ("/healthz", "/nope"):
        assert admin.authorized(path, authorization), "only /status and /metrics are guarded"
    open_admin: AdminServer = Balancer(from_dict(config_with()), EventLog()).admin
    assert open_admin.authorized("/status", authorization), "no admin_token, no guard"


async def test_admin_token_guards_status_and_metrics(balancer_factory: Any, echo_backends: Any) -> None:
    primary = await echo_backends("primary")
    bal: BalancerProc = await balancer_factory([("primary", ws_url(primary))], admin_token=TOKEN)
    good = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/status", "/metrics"):
        assert (await bal.get(path, headers={}))[0] == 401
        assert (await bal.get(path, headers={"Authorization": "Bearer nope"}))[0] == 401
        code, body = await bal.get(path, headers=good)
        assert code == 200, body
    assert (await bal.get("/healthz", headers={}))[0] == 200
    async with raw_client(bal.admin) as raw:
        await raw.send(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        status, head = await raw.response_head()
    assert status == 401
    assert b'WWW-Authenticate: Bearer realm="wschaos-balancer admin"' in head
    assert TOKEN.encode() not in head
    async with raw_client(bal.admin) as raw:
        await raw.send(f"HEAD /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        status, head = await raw.response_head()
    assert status == 200, head
    assert TOKEN not in bal.stderr() and TOKEN not in bal.stdout_path.read_text(), "the token was logged"
