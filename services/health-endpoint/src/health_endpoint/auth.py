"""Optional bearer-token authentication for the health API.

The token lives in a file (a mounted Secret); it is re-read when the file changes, so rotating
the Secret needs no restart. Comparison is constant-time. A token file that disappears or empties
after startup refuses every request (fail closed) rather than opening the API.
"""

from __future__ import annotations

import enum
import hmac
import os
import threading
from pathlib import Path


class AuthResult(enum.StrEnum):
    OK = "ok"
    MISSING = "missing"
    """No ``Authorization: Bearer`` header."""
    INVALID = "invalid"
    """A bearer token that is not the configured one."""
    UNAVAILABLE = "unavailable"
    """The token file cannot be read: nothing is accepted."""


class TokenFile:
    """The expected token, read from ``path`` and re-read when the file's metadata changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._token: bytes | None = None

    def current(self) -> bytes | None:
        """The token, or ``None`` when the file is missing, unreadable or empty."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                try:
                    token = self.path.read_bytes().strip()
                except OSError:
                    return None
                self._token = token or None
                self._stamp = stamp
            return self._token


def check_authorization(header: str | None, tokens: TokenFile) -> AuthResult:
    """Judge an ``Authorization`` header against the token file."""
    expected = tokens.current()
    if expected is None:
        return AuthResult.UNAVAILABLE
    if not header:
        return AuthResult.MISSING
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return AuthResult.MISSING
    if hmac.compare_digest(credentials.strip().encode("utf-8"), expected):
        return AuthResult.OK
    return AuthResult.INVALID
