"""The one exception type the package raises for bad input."""


class VCMError(ValueError):
    """Raised for malformed streams, bad images, bad options and missing weights.

    Subclassing ValueError keeps ``except ValueError`` callers working; the message always
    says what was wrong.
    """
