"""The exceptions the package raises on purpose, by what a caller can do about them.

* :class:`VCMError` — bad input: a malformed or foreign stream, a bad image, a bad option,
  missing weights. Fix the input; retrying the same call fails the same way. A ``ValueError``,
  so ``except ValueError`` callers keep working. Its message always says what was wrong.
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


class Unavailable(Exception):
    """A service or database is unreachable or busy (an outage, not bad input): retry later.
    The message says which and why."""
