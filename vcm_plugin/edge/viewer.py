"""The viewer page served at ``GET /``: cameras, a 24-hour timeline (boxes per hour, events),
the camera's events with their best frame at full quality and a clip download, and a strip of
frames newest first showing the detection picture with the worker's boxes, "Full quality" to
pull the texture layers, and a live mode that adds new frames as they come.

The page is two package data files, ``page/index.html`` and ``page/viewer.js`` (read once,
on first use), so they are edited, linted and diffed as HTML and JavaScript.

Why plain HTML + a little JS from the same process: nothing to build or host apart, and the
page is the same origin as the API, so no CORS is needed (none is offered). The page holds no
data: every call it makes carries the viewer's bearer token (typed in, or given once in the
URL fragment ``#token=...``, which browsers never send to a server) and images are fetched
with ``fetch`` and shown from blob URLs, so the token never appears in a URL or a log.
"""

from __future__ import annotations

import functools
from importlib.resources import files

__all__ = ["page_file"]


@functools.cache
def page_file(name: str) -> str:
    """The text of ``page/<name>`` (``index.html`` or ``viewer.js``)."""
    return (files("vcm_plugin.edge") / "page" / name).read_text(encoding="utf-8")
