"""Codec.inspect's typed result (StreamInfo), container.read_header and resolve_point."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest

from vcm_plugin import Codec, VCMError
from vcm_plugin.codec import container
from vcm_plugin.codec.api import resolve_point
from vcm_plugin.codec.streaminfo import StreamInfo


@pytest.fixture(scope="module")
def blob() -> bytes:
    rng = np.random.default_rng(0)
    return Codec("fast", device="cpu").encode(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))


def test_stream_info_is_frozen_typed_and_json_ready(blob):
    info = Codec("fast", device="cpu").inspect(blob)
    assert isinstance(info, StreamInfo)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.width = 1  # type: ignore[misc]
    doc = json.loads(json.dumps(info.as_dict()))
    assert doc == info.as_dict() and "header" not in doc
    assert (info.width, info.height) == (56, 40) and info.complete_layers == info.num_layers
    assert info.header == container.parse_header(blob, 1 << 30)
    assert info["point_bytes"] == info.point_bytes  # the dict-style read still works
    for name in ("header", "no_such_field"):
        with pytest.raises(KeyError):
            info[name]


def test_read_header_is_typed_and_reads_one_probe(blob):
    f = io.BytesIO(blob + b"\0" * 1000)
    probe = container.read_header(f)
    head, header = probe  # still unpacks
    assert probe.header is header and f.tell() == len(head) == container.HEADER_PROBE
    assert header.num_layers == Codec("fast").inspect(blob).num_layers


def test_resolve_point_one_rule_for_analytics(blob):
    header = container.parse_header(blob, 1 << 30)
    analytics = Codec("fast").inspect(blob).analytics_point
    assert resolve_point("analytics", header) == analytics
    assert resolve_point(None, header) == header.num_layers
    assert resolve_point(99, header) == header.num_layers
    assert resolve_point(None, header, clamp=False) is None
    below = [k for k in range(1, header.num_layers + 1) if k < analytics]
    if below:  # a stream cut below the analytics point: the highest point it holds
        assert resolve_point("analytics", header, below, clamp=False) == below[-1]
    with pytest.raises(VCMError, match="no operating point at or below"):
        resolve_point("analytics", header, [k for k in (99,)])
    with pytest.raises(VCMError, match="positive integer or 'analytics'"):
        resolve_point("all", header)
