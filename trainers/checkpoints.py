"""Checkpoints of a training run: written by every process into ``step-N.tmp`` (accelerate's
``save_state``: model and optimizer gathered through its own helpers under FSDP/DeepSpeed,
each process's RNG state), then renamed by the main process alone; a directory without
``.tmp`` is complete.

A checkpoint holds model, optimizer, scheduler, the RNG states and the position (epoch, next
step of that epoch, global step). The data order of every epoch is a pure function of
(seed, epoch), so a resumed run continues with exactly the groups the killed one would have
seen next; metrics lines written after the checkpoint are dropped and rewritten.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pipeline.atomic import atomic_dir, write_text_atomic

CKPT_PREFIX = "step-"


@dataclass
class Position:
    epoch: int = 0
    step_in_epoch: int = 0  # the next step of ``epoch`` to run
    step: int = 0  # optimizer steps done in all


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint (a ``.tmp`` directory is an interrupted save)."""
    done = [p for p in Path(ckpt_dir).glob(f"{CKPT_PREFIX}*")
            if p.is_dir() and not p.name.endswith(".tmp") and (p / "position.json").exists()]
    return max(done, key=lambda p: int(p.name[len(CKPT_PREFIX):]), default=None)


def save_checkpoint(accelerator, ckpt_dir: Path, position: Position, keep: int) -> None:
    """Called on every process at the same step."""
    target = Path(ckpt_dir) / f"{CKPT_PREFIX}{position.step:07d}"
    main = accelerator.is_main_process
    with atomic_dir(target) if main else _tmp_of(target) as tmp:
        accelerator.wait_for_everyone()  # the main process has made the directory
        try:
            accelerator.save_state(str(tmp))
        except RuntimeError as err:
            full = _out_of_space(tmp)
            if full is None:
                raise
            raise full from err
        accelerator.wait_for_everyone()  # every process has written its part
        if main:
            write_text_atomic(json.dumps(asdict(position)), tmp / "position.json")
    if main:
        complete = sorted(p for p in Path(ckpt_dir).glob(f"{CKPT_PREFIX}*")
                          if not p.name.endswith(".tmp"))
        for old in complete[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


# After a write failed for want of space, what is left is less than one write's buffer;
# a disk with more free than this failed for another reason.
_FULL_BELOW_BYTES = 16 * 2**20


def _out_of_space(tmp: Path) -> OSError | None:
    """torch.save reports a write that ran out of space as a bare RuntimeError ('[enforce
    fail at inline_container.cc] unexpected pos ...': no errno, no text, seen on a full
    tmpfs). With the disk all but full at that moment, it is that: the OSError(ENOSPC) to
    raise from it, so that the CLI can tell the user what to do. None if the disk has room."""
    try:
        free = shutil.disk_usage(tmp).free
    except OSError:
        return None
    if free >= _FULL_BELOW_BYTES:
        return None
    return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} while saving a checkpoint",
                   str(tmp.parent))


class _tmp_of:
    """The ``.tmp`` directory the main process fills, seen from another process."""

    def __init__(self, target: Path) -> None:
        self.path = target.with_name(target.name + ".tmp")

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc) -> None:
        return None


def restore(accelerator, ckpt_dir: Path) -> Position | None:
    """Load the newest complete checkpoint into the prepared objects; None if there is none."""
    ckpt = latest_checkpoint(ckpt_dir)
    if ckpt is None:
        return None
    saved = json.loads((ckpt / "position.json").read_text())
    if set(saved) != {f.name for f in fields(Position)}:
        raise ValueError(f"{ckpt} was written by an older trainer whose steps are cut "
                         "differently; it cannot be resumed exactly: train again without "
                         "--resume")
    accelerator.load_state(str(ckpt))
    return Position(**saved)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics lines of steps after ``step`` (written after the checkpoint resumed)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    write_text_atomic("".join(ln + "\n" for ln in keep), path)
