"""Process-wide settings that make CPU inference faster; the CLI, the server and the corpus workers
apply them, library users may call :func:`tune_allocator` themselves.

Why: PyTorch's CPU tensors come from glibc ``malloc``. With its defaults, blocks of several MB (every
activation of a 10 s signal) are returned to the operating system when freed and fetched again, zero-
filled page by page, for the next layer: measured 15,000 page faults per 10 s encode + decode and
about 15 % of its time. Keeping freed memory in the process removes them (the same effect as running
with jemalloc or tcmalloc, which need ``LD_PRELOAD`` before the process starts; ``mallopt`` works at
any time). The cost: memory freed after a peak stays with the process for reuse instead of going back
to the system.

It also bounds oneDNN's primitive cache (compiled convolution and LSTM kernels, one per input shape) at
:data:`PRIMITIVE_CACHE_CAPACITY` entries instead of oneDNN's 1,024. Inputs of many lengths (a corpus)
each add primitives: ``rvqkit corpus encode`` of the 300-file benchmark corpus peaked at 2.49 GB
resident with the default and 1.76 GB with 256, at the same speed; 64 was too few for one 24 kHz
encode + decode (its layers at three block widths), 23 % slower.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # bytes: glibc's maximum; larger blocks are still mapped individually
TRIM_THRESHOLD = 1 << 30  # bytes of free memory at the top of the heap kept before trimming
PRIMITIVE_CACHE_CAPACITY = 256  # oneDNN primitives kept (ONEDNN_PRIMITIVE_CACHE_CAPACITY)

_tuned: bool | None = None


def tune_allocator() -> bool:
    """Keep freed memory in the process (glibc only; elsewhere a no-op). Returns whether it applied.

    Equivalent to starting Python with
    ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824``.
    Also sets ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` to :data:`PRIMITIVE_CACHE_CAPACITY` unless it (or the
    older ``DNNL_PRIMITIVE_CACHE_CAPACITY``) is set already; oneDNN reads it when it first builds a
    primitive, so call this before running a model.
    """
    if "DNNL_PRIMITIVE_CACHE_CAPACITY" not in os.environ:  # oneDNN's older name, also a user's choice
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(PRIMITIVE_CACHE_CAPACITY))
    global _tuned
    if _tuned is None:
        _tuned = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # not glibc (musl has no mallopt)
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _tuned = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            )
    return _tuned
