"""Allocation settings for a stage that churns through large arrays chunk after chunk.

Two defaults of the libraries underneath hand every large array fresh pages from the
kernel, which then zeroes them, 2 MiB at a time: numpy asks for transparent huge pages
(``madvise(MADV_HUGEPAGE)``) on every allocation of 4 MiB or more, and Arrow's default
allocator (mimalloc) does the same for its arenas and returns freed memory to the kernel
soon after. Where the kernel's THP setting is ``madvise`` (Ubuntu's and Debian's default),
a stage that allocates and frees tens of MiB per chunk pays that on every chunk. Measured
on the ranking stage (250k groups, 2 cores, ``perf``): a third of all CPU time was in
``clear_page_erms`` under ``do_huge_pmd_anonymous_page``. With numpy's hint off and Arrow on
the system allocator (glibc malloc, which keeps freed memory for the next chunk), system
time fell from 7.7-8.6 s to 2.3-3.4 s and the stage ran 1.3-1.7x faster (3 runs interleaved
with the code before).

Both switches are process-wide, so they affect every thread while a block is open;
overlapping blocks (two rankings in two threads) share one switch, restored when the last
block ends. Arrays allocated inside keep the allocator they came from, so they stay valid
and are freed correctly after it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

_lock = threading.Lock()
_open = 0  # blocks open in any thread
_restore: list = []  # what the first block found: (numpy switch, its hint, Arrow's pool)


def _numpy_hugepage_switch():
    """numpy's own switch behind ``NUMPY_MADVISE_HUGEPAGE``, or None where it has none."""
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    return getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)


@contextlib.contextmanager
def reuse_freed_pages() -> Iterator[None]:
    """Inside the block: numpy without the huge-page hint, Arrow on the system allocator."""
    global _open
    with _lock:
        if _open == 0:
            switch = _numpy_hugepage_switch()
            hint = switch(False) if switch is not None else None
            _restore[:] = [switch, hint, pa.default_memory_pool()]
            pa.set_memory_pool(pa.system_memory_pool())
        _open += 1
    try:
        yield
    finally:
        with _lock:
            _open -= 1
            if _open == 0:
                switch, hint, pool = _restore
                pa.set_memory_pool(pool)
                if switch is not None:
                    switch(hint)
