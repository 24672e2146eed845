"""Conformance of the HTTP API with Toxiproxy 2.x, over raw HTTP (requests, http.client)."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess

import requests
from toxiproxy_support import (
    Api,
    ServerThread,
    Upstream,
    connect,
    free_port,
    is_refused,
    port_of,
    read_to_eof,
)

ERROR_TYPE = "text/plain; charset=utf-8"


def error_of(reply: object) -> tuple[int, str]:
    body = json.loads(reply.text)  # type: ignore[attr-defined]
    assert body["status"] == reply.status_code  # type: ignore[attr-defined]
    assert reply.text.endswith("\n")  # type: ignore[attr-defined]
    return body["status"], body["error"]


# -- routing and middleware -------------------------------------------------------


def test_version_exact_bytes_and_request_id(api: Api) -> None:
    reply = api.request("GET", "/version")
    assert reply.status_code == 200
    assert re.fullmatch(rb'\{"version": "[^"]+"\}\n', reply.content)
    assert reply.headers["Content-Type"] == "application/json;charset=utf-8"
    assert re.fullmatch(r"[0-9a-v]{20}", reply.headers["X-Toxiproxy-Request-Id"])


def test_browser_user_agent_is_refused(api: Api) -> None:
    reply = api.request("GET", "/proxies", headers={"User-Agent": "Mozilla/5.0 (X11)"})
    assert reply.status_code == 403
    assert reply.text == "User agent not allowed\n"
    assert "X-Toxiproxy-Request-Id" in reply.headers
    assert api.request("GET", "/proxies", headers={"User-Agent": "Wget/1.21"}).status_code == 200


def test_unknown_paths_are_plain_404(api: Api) -> None:
    for path in ("/nope", "/proxies/", "/version/", "/proxies/a/b", "/proxies//toxics", "/"):
        reply = api.request("GET", path)
        assert reply.status_code == 404, path
        assert reply.text == "404 page not found\n"
        assert reply.headers["Content-Type"] == ERROR_TYPE
        assert "X-Toxiproxy-Request-Id" not in reply.headers


def test_wrong_method_is_empty_405(api: Api) -> None:
    for method, path in [
        ("PUT", "/proxies"),
        ("GET", "/reset"),
        ("POST", "/version"),
        ("GET", "/populate"),
        ("DELETE", "/proxies/x/toxics"),
        ("PUT", "/proxies/x"),
        ("HEAD", "/version"),
    ]:
        reply = api.request(method, path)
        assert reply.status_code == 405, (method, path)
        assert reply.content == b""


# -- proxies ------------------------------------------------------------------------


def test_empty_index(api: Api) -> None:
    reply = api.request("GET", "/proxies")
    assert (reply.status_code, reply.content) == (200, b"{}")


def test_create_rewrites_listen_and_orders_fields(api: Api, echo: Upstream) -> None:
    reply = api.request("POST", "/proxies", json={"name": "one", "listen": "localhost:0", "upstream": echo.address})
    assert reply.status_code == 201
    assert reply.headers["Content-Type"] == "application/json"
    body = reply.json()
    assert list(body) == ["name", "listen", "upstream", "enabled", "toxics"]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", body["listen"]) and port_of(body["listen"]) != 0
    assert body["enabled"] is True and body["toxics"] == []
    assert reply.text.endswith('"toxics":[]}')
    assert api.request("GET", "/proxies").json() == {"one": body}
    assert api.request("GET", "/proxies/one").json() == body
    with connect(port_of(body["listen"])) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"


def test_create_errors(api: Api, echo: Upstream) -> None:
    cases = [
        (b"", 400, "bad request body: EOF"),
        (b"{nope", 400, "bad request body: invalid character 'n' looking for beginning of object key string"),
        (
            b'{"name": 5}',
            400,
            "bad request body: json: cannot unmarshal number into Go struct field Proxy.name of type string",
        ),
        (b'{"upstream": "x:1"}', 400, "missing required field: name"),
        (b'{"name": "", "upstream": "x:1"}', 400, "missing required field: name"),
        (b'{"name": "a"}', 400, "missing required field: upstream"),
        (b'{"name": "a", "upstream": ""}', 400, "missing required field: upstream"),
        (b"[1, 2]", 400, "bad request body: json: cannot unmarshal array into Go value of type toxiproxy.Proxy"),
    ]
    for body, status, message in cases:
        reply = api.request("POST", "/proxies", data=body)
        assert error_of(reply) == (status, message), body
        assert reply.headers["Content-Type"] == ERROR_TYPE
    api.create("dup", echo.address)
    reply = api.request("POST", "/proxies", json={"name": "dup", "upstream": echo.address})
    assert error_of(reply) == (409, "proxy already exists")


def test_create_bind_failure_is_500_and_adds_nothing(api: Api, echo: Upstream) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        reply = api.request(
            "POST", "/proxies", json={"name": "clash", "listen": f"127.0.0.1:{port}", "upstream": echo.address}
        )
        assert error_of(reply) == (500, f"listen tcp 127.0.0.1:{port}: bind: address already in use")
    assert api.request("GET", "/proxies").json() == {}
    reply = api.request("POST", "/proxies", json={"name": "bad", "listen": "local373", "upstream": echo.address})
    assert error_of(reply) == (500, "listen tcp: address local373: missing port in address")


def test_unknown_fields_ignored_and_names_case_insensitive(api: Api, echo: Upstream) -> None:
    reply = api.request(
        "POST",
        "/proxies",
        data=json.dumps({"NAME": "ci", "Upstream": echo.address, "listen": "127.0.0.1:0", "extra": [1]})
        + " trailing garbage is ignored, as by Go's json.Decoder",
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["name"] == "ci"


def test_disabled_create_then_enable_and_disable(api: Api, echo: Upstream) -> None:
    port = free_port()
    body = api.create("off", echo.address, listen=f"localhost:{port}", enabled=False)
    assert body["listen"] == f"localhost:{port}" and body["enabled"] is False
    assert is_refused(port)
    reply = api.request("POST", "/proxies/off", json={"enabled": True})
    assert reply.status_code == 200
    assert reply.json()["listen"] == f"127.0.0.1:{port}"
    with connect(port) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        reply = api.request("PATCH", "/proxies/off", json={"enabled": False})
        assert reply.json()["enabled"] is False
        assert read_to_eof(sock) == b""
    assert is_refused(port)


def test_update_keeps_missing_fields_and_restarts_on_change(api: Api, echo: Upstream, make_upstream: object) -> None:
    first = api.create("u", echo.address)
    port = port_of(first["listen"])
    other: Upstream = make_upstream()  # type: ignore[operator]
    reply = api.request("PATCH", "/proxies/u", json={"name": "ignored"})
    assert reply.json() == first
    with connect(port) as sock:
        sock.sendall(b"a")
        assert sock.recv(1) == b"a"
        reply = api.request("POST", "/proxies/u", json={"upstream": other.address})
        assert reply.status_code == 200
        assert reply.json()["upstream"] == other.address
        assert reply.json()["listen"] == first["listen"]
        # An upstream change restarts the proxy: live connections are closed.
        assert read_to_eof(sock) == b""
    reply = api.request("PATCH", "/proxies/u", json={"listen": "localhost:0"})
    assert port_of(reply.json()["listen"]) != port
    reply = api.request("PATCH", "/proxies/u", json={"listen": "nonsense"})
    assert error_of(reply)[0] == 500
    assert error_of(api.request("PATCH", "/proxies/u", data=b"[")) == (400, "bad request body: unexpected EOF")
    assert error_of(api.request("PATCH", "/proxies/nope", json={})) == (404, "proxy not found")


def test_delete(api: Api, echo: Upstream) -> None:
    body = api.create("d", echo.address)
    with connect(port_of(body["listen"])) as sock:
        reply = api.request("DELETE", "/proxies/d")
        assert (reply.status_code, reply.content) == (204, b"")
        assert read_to_eof(sock) == b""
    assert is_refused(port_of(body["listen"]))
    assert api.request("GET", "/proxies").json() == {}
    assert error_of(api.request("DELETE", "/proxies/d")) == (404, "proxy not found")
    assert error_of(api.request("GET", "/proxies/d")) == (404, "proxy not found")


# -- populate -------------------------------------------------------------------------


def test_populate_creates_in_order(api: Api, echo: Upstream) -> None:
    reply = api.request(
        "POST",
        "/populate",
        json=[
            {"name": "p1", "listen": "127.0.0.1:0", "upstream": echo.address},
            {"name": "p2", "listen": "127.0.0.1:0", "upstream": echo.address, "enabled": False},
        ],
    )
    assert reply.status_code == 201
    proxies = reply.json()["proxies"]
    assert [p["name"] for p in proxies] == ["p1", "p2"]
    assert proxies[0]["enabled"] is True and proxies[1]["enabled"] is False
    with connect(port_of(proxies[0]["listen"])) as sock:
        sock.sendall(b"z")
        assert sock.recv(1) == b"z"


def test_populate_keeps_identical_and_replaces_changed(api: Api, echo: Upstream, make_upstream: object) -> None:
    same = api.create("same", echo.address)
    changed = api.create("changed", echo.address)
    for name in ("same", "changed"):
        api.add_toxic(name, type="latency", attributes={"latency": 1})
    other: Upstream = make_upstream()  # type: ignore[operator]
    reply = api.request(
        "POST",
        "/populate",
        json=[
            {"name": "same", "listen": same["listen"], "upstream": echo.address},
            {"name": "changed", "listen": changed["listen"], "upstream": other.address},
        ],
    )
    assert reply.status_code == 201, reply.text
    kept, replaced = reply.json()["proxies"]
    assert len(kept["toxics"]) == 1 and kept["listen"] == same["listen"]
    assert replaced["toxics"] == [] and replaced["upstream"] == other.address


def test_populate_validates_everything_first(api: Api, echo: Upstream) -> None:
    reply = api.request(
        "POST",
        "/populate",
        json=[
            {"name": "one", "upstream": echo.address, "listen": "127.0.0.1:0"},
            {"name": "", "upstream": echo.address},
        ],
    )
    assert reply.status_code == 400
    assert reply.json() == {"error": "missing required field: name at proxy 2", "status": 400, "proxies": None}
    reply = api.request("POST", "/populate", json=[{"name": "x"}])
    assert reply.json()["error"] == "missing required field: upstream at proxy 1"
    assert api.request("GET", "/proxies").json() == {}
    reply = api.request("POST", "/populate", json={"name": "x"})
    assert reply.status_code == 400 and reply.json()["error"].startswith("bad request body: ")


def test_populate_stops_at_bind_error_keeping_earlier(api: Api, echo: Upstream) -> None:
    reply = api.request(
        "POST",
        "/populate",
        json=[
            {"name": "one", "upstream": echo.address, "listen": "127.0.0.1:0"},
            {"name": "two", "upstream": echo.address, "listen": "local373"},
        ],
    )
    assert reply.status_code == 500
    body = reply.json()
    assert body["error"] == "listen tcp: address local373: missing port in address"
    assert [p["name"] for p in body["proxies"]] == ["one"]
    assert list(api.request("GET", "/proxies").json()) == ["one"]


# -- toxics ---------------------------------------------------------------------------


def test_toxic_create_defaults_and_shape(api: Api, echo: Upstream) -> None:
    api.create("t", echo.address)
    reply = api.request("POST", "/proxies/t/toxics", json={"type": "latency"})
    assert reply.status_code == 200
    assert reply.text == (
        '{"attributes":{"latency":0,"jitter":0},"name":"latency_downstream",'
        '"type":"latency","stream":"downstream","toxicity":1}'
    )
    api.add_toxic("t", type="latency", stream="upstream", toxicity=0.2, attributes={"latency": 5, "jitter": 1})
    api.add_toxic("t", type="noop")
    toxics = api.request("GET", "/proxies/t/toxics").json()
    # Upstream toxics first, then downstream, each in insertion order.
    assert [t["name"] for t in toxics] == ["latency_upstream", "latency_downstream", "noop_downstream"]
    assert toxics[0]["toxicity"] == 0.2
    assert toxics[2]["attributes"] == {}
    assert api.request("GET", "/proxies/t").json()["toxics"] == toxics
    shout = api.add_toxic("t", type="slicer", stream="UPSTREAM", attributes={"average_size": 10, "size_variation": 2})
    assert shout["name"] == "slicer_UPSTREAM" and shout["attributes"]["delay"] == 0


def test_toxic_create_errors(api: Api, echo: Upstream) -> None:
    api.create("t", echo.address)
    api.add_toxic("t", name="taken", type="noop", stream="upstream")
    cases = [
        ({"type": "latency", "stream": "walrustream"}, 400, "stream was invalid, can be either upstream or downstream"),
        ({"type": "latency", "stream": ""}, 400, "stream was invalid, can be either upstream or downstream"),
        ({"type": "nope"}, 400, "invalid toxic type"),
        ({"type": "latency", "name": "taken"}, 409, "toxic already exists"),
        ({"type": "latency", "attributes": {"latency": "5"}}, 400, None),
        ({"type": "latency", "attributes": {"latency": 1.5}}, 400, None),
        ({"type": "latency", "attributes": 7}, 400, None),
        ({"type": "latency", "toxicity": "1"}, 400, None),
        (
            {"type": "bandwidth", "attributes": {"rate": -1}},
            400,
            "bad request body: bandwidth rate must not be negative, got -1",
        ),
        (
            {"type": "slicer", "attributes": {"average_size": 0}},
            400,
            "bad request body: slicer average_size must be positive, got 0",
        ),
        ({"type": "slicer", "attributes": {"average_size": 5, "size_variation": 5}}, 400, None),
    ]
    for body, status, message in cases:
        reply = api.request("POST", "/proxies/t/toxics", json=body)
        got_status, got_message = error_of(reply)
        assert got_status == status, (body, reply.text)
        if message is None:
            assert got_message.startswith("bad request body: "), got_message
        else:
            assert got_message == message
    assert error_of(api.request("POST", "/proxies/t/toxics", data=b"")) == (400, "bad request body: EOF")
    assert error_of(api.request("POST", "/proxies/nope/toxics", json={"type": "noop"})) == (404, "proxy not found")
    assert error_of(api.request("GET", "/proxies/nope/toxics")) == (404, "proxy not found")
    assert [t["name"] for t in api.request("GET", "/proxies/t/toxics").json()] == ["taken"]


def test_toxic_update_merges(api: Api, echo: Upstream) -> None:
    api.create("t", echo.address)
    api.add_toxic("t", type="latency", attributes={"latency": 100, "jitter": 10})
    path = "/proxies/t/toxics/latency_downstream"
    reply = api.request("PATCH", path, json={"attributes": {"latency": 1000}, "toxicity": 0.5})
    assert reply.status_code == 200
    assert reply.json()["attributes"] == {"latency": 1000, "jitter": 10}
    assert reply.json()["toxicity"] == 0.5
    reply = api.request(
        "POST", path, json={"attributes": {"jitter": 3}, "name": "x", "type": "noop", "stream": "upstream"}
    )
    assert reply.json() == {
        "attributes": {"latency": 1000, "jitter": 3},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 0.5,
    }
    assert api.request("GET", path).json() == reply.json()
    assert error_of(api.request("PATCH", path, json={"attributes": {"latency": "x"}}))[0] == 400
    assert error_of(api.request("PATCH", "/proxies/t/toxics/nope", json={})) == (404, "toxic not found")
    assert error_of(api.request("PATCH", "/proxies/nope/toxics/x", json={})) == (404, "proxy not found")
    api.add_toxic("t", type="slicer", attributes={"average_size": 10})
    reply = api.request("PATCH", "/proxies/t/toxics/slicer_downstream", json={"attributes": {"average_size": 0}})
    assert error_of(reply)[0] == 400


def test_toxic_delete(api: Api, echo: Upstream) -> None:
    api.create("t", echo.address)
    api.add_toxic("t", type="noop")
    reply = api.request("DELETE", "/proxies/t/toxics/noop_downstream")
    assert (reply.status_code, reply.content) == (204, b"")
    assert error_of(api.request("DELETE", "/proxies/t/toxics/noop_downstream")) == (404, "toxic not found")
    assert error_of(api.request("GET", "/proxies/t/toxics/noop_downstream")) == (404, "toxic not found")
    assert api.request("GET", "/proxies/t/toxics").json() == []


def test_reset(api: Api, echo: Upstream) -> None:
    on = api.create("on", echo.address)
    off = api.create("off", echo.address)
    api.add_toxic("on", type="latency", attributes={"latency": 100, "jitter": 10})
    api.request("PATCH", "/proxies/off", json={"enabled": False})
    with connect(port_of(on["listen"])) as sock:
        reply = api.request("POST", "/reset", data=b"ignored")
        assert (reply.status_code, reply.content) == (204, b"")
        # Live connections survive a reset.
        sock.sendall(b"still here")
        assert sock.recv(10) == b"still here"
    proxies = api.request("GET", "/proxies").json()
    assert all(p["enabled"] and p["toxics"] == [] for p in proxies.values())
    assert proxies["off"]["listen"] == off["listen"]


# -- HTTP layer -----------------------------------------------------------------------


def test_keep_alive_chunked_and_pipelining(tp: ServerThread, echo: Upstream) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", tp.server.port, timeout=5)
    conn.request("GET", "/version")
    assert conn.getresponse().read().startswith(b'{"version"')
    body = json.dumps({"name": "c", "upstream": echo.address, "listen": "127.0.0.1:0"}).encode()
    conn.request(
        "POST",
        "/proxies",
        body=iter([body[:10], body[10:]]),
        headers={"Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    reply = conn.getresponse()
    assert reply.status == 201, reply.read()
    reply.read()
    conn.request("HEAD", "/nope")
    reply = conn.getresponse()
    assert reply.status == 404 and reply.read() == b""
    conn.close()
    with socket.create_connection(("127.0.0.1", tp.server.port), timeout=5) as raw:
        raw.sendall(
            b"GET /version HTTP/1.1\r\nHost: x\r\n\r\nGET /proxies/c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = read_to_eof(raw)
    assert data.count(b"HTTP/1.1 200 OK") == 2 and data.endswith(b'"toxics":[]}')


def test_malformed_requests_get_400_and_server_survives(tp: ServerThread) -> None:
    for junk in (
        b"garbage\r\n\r\n",
        b"GET /version\r\n\r\n",
        b"GET /version HTTP/1.1\r\n\r\n",
        b"GET /version HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n",
        b"POST /proxies HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n",
        b"\x00\xff\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", tp.server.port), timeout=5) as raw:
            raw.sendall(junk)
            assert read_to_eof(raw).startswith(b"HTTP/1.1 400 "), junk
    assert requests.get(tp.url + "/version", timeout=5).status_code == 200


def test_curl_with_expect_continue(tp: ServerThread, echo: Upstream) -> None:
    body = json.dumps({"name": "curl" + "x" * 2000, "upstream": echo.address, "listen": "127.0.0.1:0"})
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-H",
            "Expect: 100-continue",
            "-d",
            body,
            "-w",
            "%{http_code}",
            f"{tp.url}/proxies",
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.stdout.endswith("201"), (result.stdout, result.stderr)
