"""One fixed intra-op thread count for the codec's float arithmetic.

oneDNN convolutions, channels-last GroupNorm and vectorised element-wise kernels split their
work by the number of torch threads, and the split changes the order of float summation: on
an AVX-512 CPU the generator decode of a 48x64 photo differed by a grey level between 1 and 2
threads. Pixels that later layers are coded against must not depend on the caller's thread
setting, so every such torch computation of the codec (and the encoder's generator, so the
same photo gives the same stream) runs on exactly one intra-op thread. A decoder's output
that nothing is coded against may use the caller's threads (``render(..., exact=False)``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

CODEC_THREADS = 1


@contextmanager
def codec_threads() -> Iterator[None]:
    """Run the enclosed torch work on ``CODEC_THREADS`` threads; restore the caller's count.

    torch's OpenMP thread count is per calling thread, so this does not disturb other Python
    threads that run torch at the same time.
    """
    before = torch.get_num_threads()
    if before == CODEC_THREADS:
        yield
        return
    torch.set_num_threads(CODEC_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)
