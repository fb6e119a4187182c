"""A small TCP proxy for fault injection in tests: cut, hang, delay and throttle connections.

``TcpProxy(host, port)`` listens on a free loopback port and forwards each accepted connection
to the target, one thread per direction. Faults: ``cut`` (close everything, refuse new
connections), ``hang`` (forward nothing, close nothing), ``delay``, ``throttle``. They apply
to every connection, open or new, until ``restore()``. ``hang_replies`` forwards requests but
holds the answers: the server acts on a request whose reply the client never sees. At most
``max_connections`` are open at once; ``stop()`` closes everything.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass

CHUNK_BYTES = 16384
CONNECT_TIMEOUT_S = 5.0
POLL_S = 0.2  # how often a blocked thread notices stop() or a fault


@dataclass(frozen=True)
class Faults:
    """What the proxy does to traffic right now."""

    cut: bool = False
    hang: bool = False
    hang_replies: bool = False  # only the server-to-client direction hangs
    delay_s: float = 0.0
    bytes_per_s: float | None = None


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port``, with injectable faults."""

    def __init__(self, target_host: str, target_port: int, max_connections: int = 64) -> None:
        self.target = (target_host, target_port)
        self.max_connections = max_connections
        self.faults = Faults()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self._pairs: set[_Pair] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}",
                                          daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection and wait for the threads."""
        self._stopped.set()
        self._acceptor.join(5)
        self._listener.close()
        for pair in self._take_pairs():
            pair.close()
            pair.join(5)

    def cut(self) -> None:
        """Close every open connection; close new ones at once until ``restore()``."""
        self.faults = Faults(cut=True)
        for pair in self._take_pairs():
            pair.close()

    def hang(self) -> None:
        """Stop forwarding without closing anything, as a silent network partition does:
        peers see no data and no FIN until ``restore()`` (or until they time out)."""
        self.faults = Faults(hang=True)

    def hang_replies(self) -> None:
        """Forward what clients send, hold what the server answers until ``restore()``."""
        self.faults = Faults(hang_replies=True)

    def delay(self, seconds: float) -> None:
        """Hold each forwarded chunk for ``seconds`` (both directions)."""
        self.faults = Faults(delay_s=seconds, bytes_per_s=self.faults.bytes_per_s)

    def throttle(self, bytes_per_s: float) -> None:
        """Forward at most ``bytes_per_s`` per connection and direction."""
        self.faults = Faults(delay_s=self.faults.delay_s, bytes_per_s=bytes_per_s)

    def restore(self) -> None:
        """Back to plain forwarding (connections closed by a cut stay closed)."""
        self.faults = Faults()

    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- internals -----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._admit(client)

    def _admit(self, client: socket.socket) -> None:
        if self.faults.cut or self.open_connections() >= self.max_connections:
            _close(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT_S)
        except OSError:
            _close(client)  # target down: the client sees the connection closed
            return
        pair = _Pair(self, client, upstream)
        with self._lock:
            self._pairs.add(pair)
        pair.start()

    def _forget(self, pair: _Pair) -> None:
        with self._lock:
            self._pairs.discard(pair)

    def _take_pairs(self) -> list[_Pair]:
        with self._lock:
            pairs, self._pairs = list(self._pairs), set()
        return pairs


class _Pair:
    """One proxied connection: a client socket, its upstream socket, a pump per direction."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy, self.client, self.upstream = proxy, client, upstream
        self._closed = threading.Event()
        self._threads = [
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True),
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True),
        ]

    def start(self) -> None:
        for sock in (self.client, self.upstream):
            sock.settimeout(POLL_S)
        for thread in self._threads:
            thread.start()

    def join(self, timeout_s: float) -> None:
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout_s)

    def close(self) -> None:
        """Close both sockets (the peers see the connection end)."""
        if self._closed.is_set():
            return
        self._closed.set()
        _close(self.client)
        _close(self.upstream)
        self.proxy._forget(self)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                chunk = self._receive(source)
                if not chunk:
                    break
                self._forward(sink, chunk)
        except OSError:
            pass
        finally:
            self.close()

    def _receive(self, source: socket.socket) -> bytes:
        """The next chunk from ``source``; empty once it or this connection is closed."""
        while not self._closed.is_set():
            if self._held(source):
                self._closed.wait(POLL_S)  # unread bytes stay in the kernel buffers
                continue
            try:
                return source.recv(_chunk_size(self.proxy.faults))
            except TimeoutError:
                continue
        return b""

    def _held(self, sock: socket.socket, towards: bool = False) -> bool:
        """Whether traffic read from ``sock`` (or, ``towards``, sent to it) is held now."""
        faults = self.proxy.faults
        from_server = (sock is self.client) if towards else (sock is self.upstream)
        return faults.hang or (faults.hang_replies and from_server)

    def _forward(self, sink: socket.socket, chunk: bytes) -> None:
        while self._held(sink, towards=True) and not self._closed.is_set():
            self._closed.wait(POLL_S)  # a chunk read just before hang() is held, not sent
        faults = self.proxy.faults
        if faults.delay_s:
            self._closed.wait(faults.delay_s)
        if faults.bytes_per_s:
            self._closed.wait(len(chunk) / faults.bytes_per_s)
        view = memoryview(chunk)
        while view and not self._closed.is_set():
            try:
                view = view[sink.send(view):]
            except TimeoutError:
                continue  # a slow reader: keep trying until it reads or the pair closes


def _chunk_size(faults: Faults) -> int:
    """Small chunks under a throttle, so the rate holds over short spans too."""
    if faults.bytes_per_s:
        return max(1, min(CHUNK_BYTES, int(faults.bytes_per_s / 10)))
    return CHUNK_BYTES


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
