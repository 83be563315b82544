"""The HTTP client every probe and the readiness check use: no proxy, and redirects followed
only on the target itself.

A redirect to another address is refused, not followed: a `ready_path` that answers 302 to
somewhere else is not the service being ready, a probe must not read another process's
runtime as the service's, and the agent's token must never be sent anywhere but the agent.
Same target means the same scheme, host (as written, case-insensitive) and port.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from http.client import HTTPMessage
from typing import IO
from urllib.parse import urlsplit

from leakgate.yamlnodes import printable

MAX_LOCATION_SHOWN = 200  # characters of a refused Location in a message, once escaped


class OffTargetRedirect(urllib.error.HTTPError):
    """A redirect whose Location is not on the requested URL's scheme, host and port."""

    def __init__(
        self, url: str, code: int, location: str, headers: HTTPMessage, fp: IO[bytes] | None
    ) -> None:
        super().__init__(
            url, code, f"redirect to {shown_location(location)} off the target", headers, fp
        )
        self.location = location


def shown_location(location: str) -> str:
    """A Location the service sent, fit for a message: control and other unprintable
    characters escaped (no terminal escapes, no forged lines), at most MAX_LOCATION_SHOWN
    characters (then ending in "...")."""
    shown = printable(location[: MAX_LOCATION_SHOWN + 1])
    if len(location) > MAX_LOCATION_SHOWN or len(shown) > MAX_LOCATION_SHOWN:
        shown = shown[: MAX_LOCATION_SHOWN - 3] + "..."
    return shown


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1  # matches no real port: never the same target
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


class _OnTargetOnly(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if origin(newurl) != origin(req.full_url):
            raise OffTargetRedirect(req.full_url, code, newurl, headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def opener() -> urllib.request.OpenerDirector:
    """An opener without proxies that follows redirects on the target only."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _OnTargetOnly())


def describe(e: urllib.error.HTTPError) -> str:
    """`HTTP 503`, or for a refused redirect `HTTP 302 to URL (off the target: not followed)`."""
    if isinstance(e, OffTargetRedirect):
        return f"HTTP {e.code} to {shown_location(e.location)} (off the target: not followed)"
    return f"HTTP {e.code}"
