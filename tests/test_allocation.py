"""The ranking stage's allocation switches: on inside the block, restored after, even on an
error, and arrays made inside stay usable after it."""

import numpy as np
import pyarrow as pa
import pytest

from pipeline.allocation import _numpy_hugepage_switch, reuse_freed_pages


def _numpy_hint() -> bool:
    switch = _numpy_hugepage_switch()
    before = switch(True)
    switch(before)
    return before


def test_switches_are_on_inside_and_restored_after_even_on_an_error():
    assert _numpy_hugepage_switch() is not None  # numpy of this project has the switch
    pool, hint = pa.default_memory_pool().backend_name, _numpy_hint()
    with pytest.raises(RuntimeError), reuse_freed_pages():
        assert pa.default_memory_pool().backend_name == "system"
        assert _numpy_hint() is False
        raise RuntimeError("a stage fails half-way")
    assert pa.default_memory_pool().backend_name == pool
    assert _numpy_hint() == hint


def test_arrays_made_inside_outlive_the_block():
    with reuse_freed_pages():
        table = pa.table({"x": pa.array(np.arange(1_000_000))})
        big = np.ones(2_000_000)
    assert table.column("x").to_numpy()[-1] == 999_999 and big.sum() == 2_000_000
    del table  # freed through the allocator it came from, not the default one now
