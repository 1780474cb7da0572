"""vcm_plugin: a scalable image codec whose layer 0 carries what analytics need."""

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
