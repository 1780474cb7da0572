"""The error hierarchy (issue 28, item 3): bad input is a VCMError (a ValueError); an outage
(the edge service or its index database out of reach) is an Unavailable, which is *not* a
ValueError, so ``except ValueError`` never swallows it and the service's 503 follows from the
type; the CLI reports either as one line and exit status 1."""

from __future__ import annotations

import pytest

from vcm_plugin import cli
from vcm_plugin.edge.client import EdgeClient, ServerError, ServerUnavailable
from vcm_plugin.edge.index import IndexUnavailable
from vcm_plugin.errors import Unavailable, VCMError


def test_outages_are_not_bad_input():
    for outage in (ServerUnavailable, IndexUnavailable):
        assert issubclass(outage, Unavailable)
        assert not issubclass(outage, (VCMError, ValueError))
    assert issubclass(VCMError, ValueError) and not issubclass(Unavailable, ValueError)
    assert issubclass(ServerError, VCMError)  # the server refused what was sent


def test_an_unreachable_server_is_an_outage_not_a_value_error():
    client = EdgeClient("http://127.0.0.1:1", retry_for=0.5, timeout=2.0)
    with pytest.raises(Unavailable) as err:
        try:
            client.frames("cam")
        except ValueError:  # what 0.3 let swallow an outage
            pytest.fail("an outage was caught as a ValueError")
    assert "http://127.0.0.1:1" in str(err.value) and "ConnectionRefusedError" in str(err.value)


def test_cli_reports_an_outage_in_one_line(tmp_path, capsys):
    rc = cli.main(
        ["edge", "reindex", "--store", str(tmp_path), "--db", "postgresql://u@127.0.0.1:1/x"]
    )
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("vcm: error: index database unavailable")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_stream_cut_short_is_truncated_a_damaged_one_corrupt(photo):
    """Issue 28, item 3: the exception says whether more bytes would help, so a reader of a
    stream still arriving needs no second look at the header to tell the two apart."""
    from vcm_plugin import Codec
    from vcm_plugin.codec import container
    from vcm_plugin.errors import CorruptStream, TruncatedStream
    from vcm_plugin.integrations._core import decodable_points

    codec = Codec.from_preset("fast")
    blob = codec.encode(photo[:64, :96])
    h = container.parse_header(blob, 10**8)
    for cut in (5, h.size - 1, h.prefix_end(1) - 1):  # in the header, in layer 0
        with pytest.raises(TruncatedStream):
            codec.inspect(blob[:cut])
        assert decodable_points(blob[:cut]) == []
    damaged = bytearray(blob)
    damaged[h.offsets[0] + 3] ^= 0xFF  # a layer's byte
    with pytest.raises(CorruptStream, match="layer 0 CRC"):
        codec.inspect(bytes(damaged))
    with pytest.raises(CorruptStream):  # decodable_points does not call damage "short"
        decodable_points(bytes(damaged))
    header = bytearray(blob)
    header[8] ^= 0x01  # a header byte: its CRC no longer matches
    with pytest.raises(CorruptStream, match="header CRC"):
        codec.inspect(bytes(header))
    assert issubclass(TruncatedStream, VCMError) and issubclass(CorruptStream, VCMError)
