"""A network that breaks on demand: ``with Link(6379) as link: ...; link.hang(); ...; link.restore()``.

A `Link` is a TCP relay on a port of its own in front of a real server, which a
test breaks the ways a network does: `hang` — connections stay open and accepted
but nothing gets through either way (a hung server, a half-open connection whose
peer vanished, packets silently dropped) — or `refuse` (every connection closed
at once: a server that is gone), then `restore`. A `Link` with no server behind it
is a black hole: it accepts every connection and never answers.
"""
from __future__ import annotations

import socket
import threading
from typing import Self


class Link:
    def __init__(self, upstream: int | None = None) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        #: Connections accepted so far (a black hole's count is how often it was asked).
        self.accepted = 0
        self._refusing = False
        self._flowing = threading.Event()
        if upstream is not None:
            self._flowing.set()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name=f"link-{self.port}").start()

    def hang(self) -> None:
        """Nothing gets through any more, on open connections or new ones; nothing is closed either."""
        self._flowing.clear()

    def refuse(self) -> None:
        """Close every connection, and each new one as soon as it is accepted."""
        self._refusing = True
        self._close_all()

    def restore(self) -> None:
        self._refusing = False
        if self.upstream is not None:
            self._flowing.set()

    def close(self) -> None:
        self.listener.close()
        self._flowing.set()  # the relays wake up, find their sockets closed and end
        self._close_all()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.accepted += 1
            if self._refusing:
                client.close()
                continue
            self._sockets.append(client)
            if self.upstream is not None:
                server = socket.create_connection(("127.0.0.1", self.upstream))
                self._sockets.append(server)
                for source, sink in ((client, server), (server, client)):
                    threading.Thread(target=self._relay, args=(source, sink), daemon=True).start()

    def _relay(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy `source` to `sink` while the link flows; what arrives meanwhile waits in the kernel."""
        while True:
            self._flowing.wait()
            try:
                data = source.recv(65536)
                self._flowing.wait()  # read just before a hang: held until the link is restored
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return

    def _close_all(self) -> None:
        sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on: a connection to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
