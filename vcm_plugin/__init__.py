"""vcm_plugin: a scalable image codec whose first layers (the analytics point) carry what
analytics needs and whose later layers refine the picture for people."""

from vcm_plugin.codec.api import Codec
from vcm_plugin.errors import CorruptStream, TruncatedStream, Unavailable, VCMError

__all__ = [
    "Codec",
    "CorruptStream",
    "TruncatedStream",
    "Unavailable",
    "VCMError",
    "__version__",
]
__version__ = "0.3.0"
