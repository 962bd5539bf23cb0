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


def _in_fresh_process(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environ
    ).stdout.strip()


def test_default_threads_follow_omp_num_threads_and_affinity():
    from rvqkit import runtime

    code = "from rvqkit import runtime; print(runtime.default_threads())"
    assert _in_fresh_process(code, OMP_NUM_THREADS="1") == "1"
    assert _in_fresh_process(code, OMP_NUM_THREADS="3") == "3"  # the user's choice, even above the cores
    cpus = runtime.available_cpus()
    assert 1 <= runtime.physical_cores() <= len(cpus)
    assert runtime.physical_cores({min(cpus)}) == 1
    if hasattr(os, "sched_setaffinity"):  # one CPU allowed: one thread
        one = f"import os; os.sched_setaffinity(0, {{{min(cpus)}}}); {code}"
        assert _in_fresh_process(one) == "1"
    assert runtime._parse_cpu_list("0-3,8\n") == {0, 1, 2, 3, 8}


def test_set_threads_and_its_checks():
    import torch

    from rvqkit.runtime import default_threads, set_threads

    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_threads(None) == default_threads() == torch.get_num_threads()
        for bad in (0, -2, 1.5, True):
            with pytest.raises(ValueError, match="threads"):
                set_threads(bad)  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(before)


def test_openmp_threads_sleep_while_waiting_unless_the_user_chose():
    code = "import os, rvqkit; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert _in_fresh_process(code) == "PASSIVE"
    assert _in_fresh_process(code, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
    # torch imported first: too late for OpenMP to read it, so rvqkit leaves the environment alone
    assert _in_fresh_process("import torch; " + code.replace("import os, ", "import os; import ")) == "None"


def test_resolve_device():
    import torch

    from rvqkit.runtime import resolve_device

    assert resolve_device("cpu") == ("cpu", "as given")
    device, why = resolve_device("auto")
    assert device == ("cuda" if torch.cuda.is_available() else "cpu") and why.startswith("auto")
