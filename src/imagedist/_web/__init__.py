"""The web dashboard (``imagedist serve``): pages, a JSON API and live updates over the library.

Needs the ``web`` extra (Starlette, uvicorn, Jinja2). It calls only :class:`imagedist.Imagedist`,
like the CLI; see docs/web.md.
"""

from __future__ import annotations

from ._app import create_app
from ._server import ServeOptions, bind, read_token, resolve_token, serve, url_of

__all__ = ["ServeOptions", "bind", "create_app", "read_token", "resolve_token", "serve", "url_of"]
