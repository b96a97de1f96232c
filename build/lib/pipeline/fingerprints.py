"""Content fingerprints of model directories and files, computed once.

A model's identity is what its files hold, not the path it was typed as: a model retrained
into the same folder is a new model, and one folder spelled two ways is the same model. The
fingerprint is a SHA-256 over every file's name and bytes (weights, config, tokenizer); a
small JSON cache keyed by (resolved path, size, mtime) makes the second call free, so a 15 GB
checkpoint is read once, not once per stage.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from pipeline.atomic import TMP_MARK, write_text_atomic

_CHUNK = 1 << 22
_LOCK = threading.Lock()
# Files that describe a run rather than the model (reports, configs of the run that wrote it).
_IGNORED_SUFFIXES = (".md", ".log", ".lock")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(model_dir: Path) -> list[Path]:
    return sorted(p for p in Path(model_dir).rglob("*")
                  if p.is_file() and TMP_MARK not in p.name and not p.name.startswith(".")
                  and not p.name.endswith(_IGNORED_SUFFIXES) and not p.name.endswith("report.json"))


def _stamp(p: Path) -> list:
    st = p.stat()
    return [st.st_size, st.st_mtime_ns]


def model_fingerprint(model_dir: Path, cache_path: Path | None = None) -> str:
    """16 hex digits identifying the directory's content. ``cache_path`` (a JSON file) keeps
    per-file digests keyed by path, size and mtime."""
    model_dir = Path(model_dir).resolve()
    with _LOCK:
        cache = _load(cache_path)
        h = hashlib.sha256()
        changed = False
        for f in _files(model_dir):
            key = str(f)
            entry = cache.get(key)
            if entry is None or entry["stamp"] != _stamp(f):
                entry = {"stamp": _stamp(f), "sha256": file_sha256(f)}
                cache[key] = entry
                changed = True
            h.update(f.relative_to(model_dir).as_posix().encode() + b"\0" +
                     entry["sha256"].encode())
        if changed and cache_path is not None:
            write_text_atomic(json.dumps(cache), cache_path)
    return h.hexdigest()[:16]


def _load(cache_path: Path | None) -> dict:
    if cache_path is None or not Path(cache_path).exists():
        return {}
    try:
        return json.loads(Path(cache_path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # a damaged cache only costs a rehash


def default_cache(workdir: Path) -> Path:
    return Path(workdir) / "cache" / "fingerprints.json"


