"""Who may talk to the review server and which files it may touch.

The server binds to the loopback interface unless told otherwise, and every HTTP request needs
the access token printed at start: in the URL once (``?secret=...``, which is also what the
trame client hands to the websocket handshake), then as a same-site, HTTP-only cookie. Paths the
page asks for are resolved (symbolic links followed) and must stay inside the data root.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from oncoseg.errors import InputError

TOKEN_PARAMETER = "secret"  # the name trame's client reads from the URL for the websocket
COOKIE = "oncoseg_review_token"
LOOPBACK = "127.0.0.1"


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_matches(offered: str | None, token: str) -> bool:
    """Constant-time comparison, so response times tell nothing about the token."""
    return offered is not None and hmac.compare_digest(offered.encode(), token.encode())


def inside_root(root: str | os.PathLike[str], requested: str | os.PathLike[str]) -> Path:
    """``requested`` (relative to the root, or absolute) resolved, if it lies inside the data
    root; anything else (``..``, a symbolic link out, another absolute path) is refused."""
    base = Path(root).resolve()
    path = (base / requested).resolve()
    if path != base and base not in path.parents:
        raise InputError(str(requested), "is outside the data root; only files under "
                         "the data root can be opened or written")
    return path


# An absolute path left after the data root's own were made relative: POSIX (two parts at
# least, so that "1/2" or "/s" in a sentence stays) or Windows (a drive letter).
_ABSOLUTE = re.compile(r"(?<![\w.~/-])(?:/[^\s/'\"():;,<>|]+){2,}/?"
                       r"|\b[A-Za-z]:[\\/](?:[^\s\\/'\"():;,<>|]+[\\/])*[^\s\\/'\"():;,<>|]*")


def relative_paths(text: str, root: str | os.PathLike[str]) -> str:
    """``text`` with every path under the data root written relative to it (the root itself
    as ``.``), and any other absolute path cut to ``.../<its last part>``.

    What the page shows (errors from any layer below included: an ITK reader, a model file
    refused, an input that cannot be read) must not tell a browser how the server's disks are
    laid out, and a reviewer knows the files by their place under the data root anyway. The
    root is matched as given and resolved (symbolic links followed), since messages may carry
    either form.
    """
    given = Path(root).absolute()
    forms = sorted({str(given), str(given.resolve())}, key=len, reverse=True)
    for form in forms:
        form = form.rstrip(os.sep) or os.sep
        text = re.sub(re.escape(form) + r"(?:[/\\]+|(?![^\s/'\"():;,<>|]))",
                      lambda m, form=form: "" if m.group(0) != form else ".", text)
    return _ABSOLUTE.sub(lambda m: ".../" + re.split(r"[\\/]", m.group(0).rstrip("/\\"))[-1],
                         text)


def token_middleware(token: str) -> Callable[..., Awaitable[Any]]:
    """An aiohttp middleware: 403 for any request without the token (URL or cookie); a request
    with it in the URL gets the cookie, so the page's scripts and websocket follow."""
    from aiohttp import web

    @web.middleware
    async def require_token(request: web.Request, handler: Callable[..., Awaitable[Any]]):
        in_url = token_matches(request.query.get(TOKEN_PARAMETER), token)
        if not (in_url or token_matches(request.cookies.get(COOKIE), token)):
            return web.Response(status=403, text="OncoSeg review: this address needs the access "
                                "token printed when the server started (?secret=...)\n")
        response = await handler(request)
        if in_url and isinstance(response, web.StreamResponse) and not response.prepared:
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
        return response

    return require_token
