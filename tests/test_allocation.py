"""The ranking stage's allocation switches: on inside the block (and inside ``rank_round``),
restored after, even on an error or when two threads overlap, and Arrow buffers made inside
are freed through the allocator they came from."""

import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import pipeline.consensus.stage as stage
from pipeline.allocation import _numpy_hugepage_switch, reuse_freed_pages
from pipeline.config import load_config


def _state() -> tuple[str, bool]:
    switch = _numpy_hugepage_switch()
    hint = switch(True)
    switch(hint)
    return pa.default_memory_pool().backend_name, hint


@pytest.fixture
def hint_on():
    """numpy's hint on before the test (its default, unless NUMPY_MADVISE_HUGEPAGE=0), so
    that restoring it is a visible change; the state before is put back after."""
    assert _numpy_hugepage_switch() is not None  # this project's numpy has the switch
    pool, hint = pa.default_memory_pool(), _numpy_hugepage_switch()(True)
    yield _state()
    pa.set_memory_pool(pool)
    _numpy_hugepage_switch()(hint)


def test_switches_are_on_inside_and_restored_after_even_on_an_error(hint_on):
    assert hint_on[1] is True and hint_on[0] != "system"
    with pytest.raises(RuntimeError), reuse_freed_pages():
        assert _state() == ("system", False)
        raise RuntimeError("a stage fails half-way")
    assert _state() == hint_on


def test_overlapping_blocks_in_two_threads_restore_the_state_before(hint_on):
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def a():  # enters first, leaves first
        with reuse_freed_pages():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def b():  # still inside when a leaves: the switches must stay on for it
        a_in.wait(10)
        with reuse_freed_pages():
            b_in.set()
            a_out.wait(10)
            seen.append(_state())

    threads = [threading.Thread(target=f) for f in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == [("system", False)]
    assert _state() == hint_on


def test_arrow_buffers_made_inside_are_freed_through_their_pool(hint_on):
    system = pa.system_memory_pool()
    before = system.bytes_allocated()
    with reuse_freed_pages():
        x = pc.add(pa.array(np.arange(1_000_000)), 1)  # a computed buffer, not zero-copy
        assert system.bytes_allocated() >= before + 8_000_000
    assert int(pc.sum(x).as_py()) == 1_000_000 * 1_000_001 // 2  # still valid after
    del x
    assert system.bytes_allocated() == before


def test_rank_round_runs_under_the_switches(hint_on, monkeypatch):
    seen = []

    def plan_round(*args, **kwargs):
        seen.append(_state())
        raise RuntimeError("stop after the first step")

    monkeypatch.setattr(stage, "plan_round", plan_round)
    with pytest.raises(RuntimeError, match="stop after"):
        stage.rank_round(None, 0, load_config().rank)
    assert seen == [("system", False)]
    assert _state() == hint_on
