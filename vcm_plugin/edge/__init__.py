"""Edge-camera pipeline: cameras upload each frame's analytics point first, analytics reads
only that point, viewers pull the texture layers on demand, events ask cameras for full
quality around what happened.

Pieces (each usable alone):

* :mod:`~vcm_plugin.edge.store` — atomic, byte-range-readable frame store on any fsspec
  filesystem, indexed by camera id and timestamp;
* :mod:`~vcm_plugin.edge.server` — the aiohttp service (``vcm edge serve``): roles, route
  table and middleware, the handlers grouped in :mod:`~vcm_plugin.edge.routes`, over
  :mod:`~vcm_plugin.edge.state` (store, index, pools, caches, background work), with
  :mod:`~vcm_plugin.edge.query` (query parameters, detections documents) and
  :mod:`~vcm_plugin.edge.http` (ranges, validators, the connection guard);
* :mod:`~vcm_plugin.edge.worker` — the analytics process (``vcm edge worker``), with
  :mod:`~vcm_plugin.edge.events` (rules, masks) and :mod:`~vcm_plugin.edge.notify` (webhook,
  MQTT);
* :mod:`~vcm_plugin.edge.camera` — the camera uploader (``vcm edge push``), reading
  :mod:`~vcm_plugin.edge.sources` (images, videos, RTSP and other FFmpeg sources);
* :mod:`~vcm_plugin.edge.client` — the blocking HTTP client they share (retry/back-off).
"""

from vcm_plugin.edge.store import FrameKey, FrameStore
from vcm_plugin.edge.stream import Layout, validate_stream

__all__ = ["FrameKey", "FrameStore", "Layout", "validate_stream"]
