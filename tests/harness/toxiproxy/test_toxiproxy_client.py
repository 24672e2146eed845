"""The whole toxiproxy-python API against the embedded server (acceptance criterion)."""

from __future__ import annotations

import pytest
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists
from toxiproxy_support import ServerThread, Upstream, connect, is_refused, port_of, read_to_eof


def test_toxiproxy_python_end_to_end(tp: ServerThread, echo: Upstream) -> None:
    client = Toxiproxy()
    assert client.running()
    assert client.version().startswith(b'{"version": ')
    assert client.proxies() == {}

    proxy = client.create(upstream=echo.address, name="web")
    assert proxy.enabled is True and port_of(proxy.listen) > 0
    with pytest.raises(ProxyExists):
        client.create(upstream=echo.address, name="web")
    assert set(client.proxies()) == {"web"}
    fetched = client.get_proxy("web")
    assert fetched is not None and fetched.listen == proxy.listen
    assert client.get_proxy("nope") is None

    port = port_of(proxy.listen)
    with connect(port) as sock:
        sock.sendall(b"hello")
        assert sock.recv(5) == b"hello"

    with proxy.down():
        assert is_refused(port)
    with connect(port) as sock:
        sock.sendall(b"again")
        assert sock.recv(5) == b"again"

    proxy.add_toxic(type="latency", attributes={"latency": 10, "jitter": 1})
    proxy.add_toxic(type="bandwidth", stream="upstream", attributes={"rate": 10000})
    proxy.add_toxic(name="cut", type="limit_data", toxicity=0.5, attributes={"bytes": 10})
    toxics = proxy.toxics()
    assert set(toxics) == {"latency_downstream", "bandwidth_upstream", "cut"}
    assert toxics["bandwidth_upstream"].stream == "upstream"
    assert toxics["cut"].toxicity == 0.5 and toxics["cut"].attributes == {"bytes": 10}
    assert proxy.get_toxic("latency_downstream").attributes == {"latency": 10, "jitter": 1}
    with pytest.raises(ProxyExists):
        proxy.add_toxic(type="latency")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="wobble")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="bandwidth", name="neg", attributes={"rate": -5})
    assert proxy.destroy_toxic("cut") is True
    with pytest.raises(NotFound):
        proxy.destroy_toxic("cut")

    assert client.reset() is True
    assert proxy.toxics() == {}

    populated = client.populate(
        [
            {"name": "web", "listen": proxy.listen, "upstream": echo.address},
            {"name": "db", "listen": "127.0.0.1:0", "upstream": echo.address},
        ]
    )
    assert [p.name for p in populated] == ["db"]
    assert set(client.proxies()) == {"web", "db"}

    with connect(port) as sock:
        assert client.destroy(proxy) is True
        assert read_to_eof(sock) == b""
    with pytest.raises(NotFound):
        proxy.destroy()
    client.destroy_all()
    assert client.proxies() == {}
