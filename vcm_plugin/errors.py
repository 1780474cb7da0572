"""The exceptions the package raises on purpose, by what a caller can do about them.

* :class:`VCMError` — bad input: a malformed or foreign stream, a bad image, a bad option,
  missing weights. Fix the input; retrying the same call fails the same way. A ``ValueError``,
  so ``except ValueError`` callers keep working. Its message always says what was wrong.
  Two kinds of bad stream say which they are, so a reader of a stream still arriving can wait
  for more bytes on one and give up on the other without re-reading anything:
  :class:`TruncatedStream` (cut short: the bytes so far are right, more are needed) and
  :class:`CorruptStream` (bytes that are there are wrong: a CRC mismatch, an impossible field).
* :class:`Unavailable` — a service or database this package talks to is down, busy or out of
  reach (the edge service, its index database). Nothing is wrong with the input: retry later.
  Deliberately *not* a ``ValueError``, so ``except ValueError`` never swallows an outage; the
  edge service answers it with 503 + ``Retry-After`` and bad input with 400, by type.
"""


class VCMError(ValueError):
    """Bad input: malformed streams, bad images, bad options and missing weights.

    Subclassing ValueError keeps ``except ValueError`` callers working; the message always
    says what was wrong.
    """


class TruncatedStream(VCMError):
    """The stream ends before what its header declares (the header itself, or a layer an
    operating point needs): more bytes would make it readable."""


class CorruptStream(VCMError):
    """Bytes that are present are wrong (a CRC mismatch, a field no writer produces): no
    amount of further bytes helps."""


class Unavailable(Exception):
    """A service or database is unreachable or busy (an outage, not bad input): retry later.
    The message says which and why."""
