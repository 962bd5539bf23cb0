"""Process-wide settings that make CPU inference faster; the CLI, the server and the corpus workers
apply them, library users may call :func:`tune_allocator` and :func:`set_threads` themselves.

Threads: :func:`default_threads` is the number of physical cores the process may use (affinity mask,
cgroup quota) or ``OMP_NUM_THREADS``; the CLI applies it (or ``--threads``) with :func:`set_threads`.
:func:`passive_omp_wait`, called when ``rvqkit`` is imported, makes torch's OpenMP threads sleep rather
than spin while they wait: on a machine busy with other work, spinning threads take the cores the
working ones need (measured on 2 busy cores: a 12 s encode + decode took 34-40 s on 2 spinning threads,
4.6-5.4 s on 2 sleeping ones, 4.4-4.5 s on 1; see docs/performance.md).

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
from pathlib import Path

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


# -- threads and device ---------------------------------------------------------------------------------
def passive_omp_wait() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` for this process unless the user chose a wait policy (``OMP_WAIT_POLICY``
    or ``GOMP_SPINCOUNT``). OpenMP reads it once, when torch is first imported, so this is called by
    ``import rvqkit`` before it imports torch; returns False when it cannot apply (torch imported
    already, or the user's setting kept)."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ or "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


passive_omp_wait()  # at import: ``import rvqkit`` imports this module before torch


def _parse_cpu_list(text: str) -> set[int]:
    """``"0-3,8"`` (the kernel's cpulist format) → ``{0, 1, 2, 3, 8}``."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def available_cpus() -> set[int]:
    """Logical CPUs this process may run on (its affinity mask; all of them where there is none)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def physical_cores(cpus: set[int] | None = None) -> int:
    """Physical cores among ``cpus`` (default: :func:`available_cpus`): hyper-threads of one core count once.

    Read from Linux's ``/sys/devices/system/cpu/cpuN/topology/thread_siblings_list`` (no dependency).
    ``psutil.cpu_count(logical=False)`` is not used: it counts the whole machine's cores and ignores the
    affinity mask (``taskset``, container cpusets), which is what decides how many threads can run here.
    Where the topology is unreadable (not Linux), every logical CPU counts as a core.
    """
    cpus = available_cpus() if cpus is None else cpus
    cores: set[frozenset[int]] = set()
    for cpu in cpus:
        try:
            text = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text()
            siblings = frozenset(_parse_cpu_list(text))
        except (OSError, ValueError):
            siblings = frozenset({cpu})
        cores.add(siblings)
    return max(1, len(cores))


def cgroup_cpu_limit() -> int | None:
    """CPUs allowed by a cgroup v2 quota (``cpu.max``, as ``docker --cpus`` sets), rounded up; None if unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, -(-int(quota) // int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def default_threads() -> int:
    """The CPU thread count rvqkit uses unless told: ``OMP_NUM_THREADS`` if set (the user's choice), else
    the physical cores this process may use (affinity mask and cgroup CPU quota).

    Why not torch's own default: torch counts the machine's cores and ignores the affinity mask and the
    quota, so in a container or under ``taskset`` it starts more threads than can run, and each of its
    parallel regions then waits for threads that are not scheduled. Hyper-threads are not counted: the
    convolutions saturate a core's vector units with one thread.
    """
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    n = physical_cores()
    quota = cgroup_cpu_limit()
    return max(1, min(n, quota) if quota else n)


def set_threads(n: int | None = None) -> int:
    """Run torch's CPU work on ``n`` threads (``None``: :func:`default_threads`); returns the count set."""
    import torch

    n = default_threads() if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def resolve_device(device: str) -> tuple[str, str]:
    """``"auto"`` → ``"cuda"`` when a CUDA GPU is usable, else ``"cpu"``; any other name is kept.

    Returns (device, why) where ``why`` says how it was chosen, for a one-line notice."""
    import torch

    if device.strip().lower() != "auto":
        return device, "as given"
    if torch.cuda.is_available():
        return "cuda", f"auto: {torch.cuda.get_device_name(0)}"
    return "cpu", "auto: no CUDA GPU"
