"""The test fault injector itself: a TcpProxy in front of a local echo server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.proxy import TcpProxy


class EchoServer:
    """Echoes every byte back on each connection, one thread per connection."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    echo = EchoServer()
    with TcpProxy("127.0.0.1", echo.port) as running:
        yield running
    echo.close()


def connect(proxy: TcpProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=5)


def round_trip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def is_closed_by_peer(sock: socket.socket) -> bool:
    """True if the peer closed: reads return EOF or a reset within the socket timeout."""
    try:
        sock.sendall(b"x")
        return sock.recv(1) == b""
    except (ConnectionError, BrokenPipeError):
        return True


def test_forwards_both_ways_byte_for_byte(proxy: TcpProxy) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    with connect(proxy) as sock:
        assert round_trip(sock, payload) == payload
    assert proxy.address == f"127.0.0.1:{proxy.port}"


def test_cut_closes_open_connections_and_refuses_new_ones_until_restore(
        proxy: TcpProxy) -> None:
    with connect(proxy) as before:
        assert round_trip(before, b"hello") == b"hello"
        proxy.cut()
        assert is_closed_by_peer(before)
    assert proxy.open_connections() == 0
    with connect(proxy) as during:  # accepted by the kernel, then closed by the proxy
        assert is_closed_by_peer(during)
    proxy.restore()
    with connect(proxy) as after:
        assert round_trip(after, b"again") == b"again"


def test_hang_forwards_nothing_and_closes_nothing_until_restore(proxy: TcpProxy) -> None:
    with connect(proxy) as sock:
        proxy.hang()
        sock.settimeout(0.5)
        sock.sendall(b"held")
        with pytest.raises(TimeoutError):
            sock.recv(4)
        assert proxy.open_connections() == 1
        proxy.restore()
        sock.settimeout(5)
        assert sock.recv(4) == b"held"


def test_delay_adds_latency_to_each_chunk(proxy: TcpProxy) -> None:
    with connect(proxy) as sock:
        started = time.monotonic()
        round_trip(sock, b"ping")
        fast_s = time.monotonic() - started
        proxy.delay(0.3)
        started = time.monotonic()
        assert round_trip(sock, b"ping") == b"ping"
        slow_s = time.monotonic() - started
    assert fast_s < 0.2
    assert slow_s >= 0.6  # 0.3 s on the way there, 0.3 s on the way back


def test_throttle_limits_the_rate_and_restore_lifts_it(proxy: TcpProxy) -> None:
    payload = b"z" * 60_000
    with connect(proxy) as sock:
        sock.settimeout(10)
        proxy.throttle(100_000)
        started = time.monotonic()
        assert round_trip(sock, payload) == payload
        throttled_s = time.monotonic() - started
        proxy.restore()
        started = time.monotonic()
        assert round_trip(sock, payload) == payload
        restored_s = time.monotonic() - started
    assert throttled_s >= 0.5  # 60 kB at 100 kB/s
    assert restored_s < 0.3


def test_target_down_closes_the_client_connection() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_port = unused.getsockname()[1]
    with TcpProxy("127.0.0.1", dead_port) as proxy, connect(proxy) as sock:
        assert is_closed_by_peer(sock)


def test_stop_closes_connections_and_the_port(proxy: TcpProxy) -> None:
    sock = connect(proxy)
    assert round_trip(sock, b"x") == b"x"
    proxy.stop()
    assert is_closed_by_peer(sock)
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        connect(proxy).close()
