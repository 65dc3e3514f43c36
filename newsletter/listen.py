"""The socket `serve` listens on, opened before the web server starts, so that a port out of
range, a busy port or an unknown host is one clear line rather than a traceback."""

from __future__ import annotations

import errno
import socket

from .errors import ConfigError


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket on `host`:`port`, or a ConfigError saying why not."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be a port number from 1 to 65535, not {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        raise ConfigError(f"cannot listen on {host}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        reason = "it is in use already" if e.errno == errno.EADDRINUSE else e.strerror
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock
