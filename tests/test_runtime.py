"""rvqkit.tune_allocator: applies on glibc Linux, is idempotent, and changes no result."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_tune_allocator_removes_page_faults_of_large_temporaries():
    # In a fresh process: several live 8 MB temporaries (as a network's layers make), freed together,
    # are returned to the system under glibc's defaults and fault in again; not once tuned.
    code = """
import ctypes, resource, torch, rvqkit
from rvqkit import runtime
# glibc's initial thresholds (128 KiB; its dynamic adjustment may have raised them during the imports)
libc = ctypes.CDLL("libc.so.6")
libc.mallopt(runtime.M_MMAP_THRESHOLD, 128 << 10)
libc.mallopt(runtime.M_TRIM_THRESHOLD, 128 << 10)
def faults():
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        a = [torch.ones(2 << 20) for _ in range(4)]
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
faults()
before = faults()
assert rvqkit.tune_allocator() and rvqkit.tune_allocator()
faults()
print(before, faults())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after = map(int, out.split())
    assert after < before / 10, (before, after)


def test_tune_allocator_bounds_onednn_primitive_cache_unless_set():
    from rvqkit.runtime import PRIMITIVE_CACHE_CAPACITY

    code = "import os, rvqkit; rvqkit.tune_allocator(); print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}

    def capacity(environ: dict[str, str]) -> str:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environ
        )
        return out.stdout.strip()

    assert capacity(env) == str(PRIMITIVE_CACHE_CAPACITY)
    assert capacity({**env, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "2048"}) == "2048"  # the user's setting wins
