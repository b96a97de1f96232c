"""One vLLM engine for a loop's successive policies.

Starting an engine costs 20-40 s on a 2-core CPU (a spawned process, the model load, the KV
cache) and closing one another 5 s; loading the next round's weights into the running engine
costs 0.02-0.03 s for the demo's model (a large model's reload is bound by reading its
weights from disk, as a fresh load is, without the rest). So the loop keeps one engine and,
each round, loads the new policy's weights into it in place (vLLM's ``reload_weights``), then
drops the prefix cache, whose blocks hold the old policy's keys and values.

That is only sound when the new policy is the same network with new numbers: the engine's
model, dtype, tokenizer (it detokenizes every sample) and generation config (its EOS ids stop
every sample) were fixed when it started, and vLLM's reload keeps a layer's old tensors
when the new checkpoint lacks them. ``engine_shape`` fingerprints exactly those files and the
checkpoint's tensor names and shapes; a policy of another shape gets a new engine, with the
reason logged. A trained policy (full fine-tuning, or LoRA merged into its base) has its
base's shape. A reload that fails closes the engine: half-loaded weights are never served.

While the loop judges and trains, a kept engine holds its weights and KV cache
(``generation.kv_cache_gib`` on a CPU); on a GPU it would hold
``generation.gpu_memory_utilization`` of the memory the reward models and the trainer need,
so there it is closed after each round's evaluation and generation by default
(``generation.keep_engine``; the evaluation's scoring runs while the engine is up, as it did
before the engine was kept).
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import time
from pathlib import Path

from pipeline.chat import TOKENIZER_FILES
from pipeline.config import Config
from pipeline.fingerprints import default_cache, model_fingerprint
from pipeline.generation import VLLMGroupSampler
from pipeline.hardware import has_cuda

log = logging.getLogger(__name__)

# What the engine read when it started, besides the weights (it is given token ids, so the
# chat template is not among them).
SHAPE_FILES = ("config.json", "generation_config.json",
               *(n for n in TOKENIZER_FILES if not n.startswith("chat_template")))
# Keys a save writes that change nothing the engine does.
_VOLATILE_KEYS = frozenset({"_name_or_path", "transformers_version", "use_cache"})


def _canonical(path: Path) -> bytes:
    """JSON files with sorted keys and volatile keys dropped (a re-save by another
    transformers version, or after training, rewrites them); other files as they are."""
    raw = path.read_bytes()
    if path.suffix != ".json":
        return raw
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in _VOLATILE_KEYS}
    return json.dumps(data, sort_keys=True).encode()


def weights_layout(model_dir: Path) -> str:
    """A digest of the checkpoint's tensor names and shapes over all its files (safetensors
    headers only, no weights read; only the files ``model.safetensors.index.json`` names when
    there is one, as vLLM loads). vLLM's reload keeps a layer's old tensors, with a warning,
    when the new checkpoint lacks them; an equal layout means every tensor the engine loaded
    at start is loaded again, however the files are sharded. "" for a checkpoint without
    safetensors files (``.bin``): such a policy always gets a new engine."""
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted({model_dir / f for f in
                        json.loads(index.read_text()).get("weight_map", {}).values()})
    else:
        files = sorted(model_dir.glob("*.safetensors"))
    tensors = []
    for f in files:
        try:
            with open(f, "rb") as fh:
                size = struct.unpack("<Q", fh.read(8))[0]
                if size > f.stat().st_size - 8:
                    raise ValueError(f"header of {size} bytes in a smaller file")
                header = json.loads(fh.read(size))
        except (OSError, struct.error, ValueError) as exc:
            raise ValueError(f"{f}: not a readable safetensors file ({exc}); a Git LFS "
                             "pointer or a partial download?") from exc
        tensors += [f"{name}:{meta['shape']}" for name, meta in header.items()
                    if name != "__metadata__"]
    if not tensors:
        return ""
    return hashlib.sha256("\n".join(sorted(tensors)).encode()).hexdigest()[:16]


def engine_shape(model_dir: Path) -> dict[str, str]:
    """{file name: digest} of the files that fix an engine, for those the directory has,
    and the checkpoint's layout under ``weights``."""
    out = {"weights": weights_layout(model_dir)}
    for name in SHAPE_FILES:
        path = Path(model_dir) / name
        if path.is_file():
            out[name] = hashlib.sha256(_canonical(path)).hexdigest()[:16]
    return out


def shape_difference(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """The files whose content (or presence) differs between two shapes."""
    return sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n))


class PolicyEngine:
    """Hands out a sampler for each policy the loop reaches, reusing one engine.

    >>> with PolicyEngine(cfg, workdir) as engines:      # doctest: +SKIP
    ...     sampler = engines.sampler(policy_r0)          # starts the engine
    ...     engines.idle()                                # closes it on a GPU
    ...     sampler = engines.sampler(policy_r1)          # reloads weights in place
    """

    def __init__(self, cfg: Config, workdir: Path | None = None) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self._sampler: VLLMGroupSampler | None = None
        self._shape: dict[str, str] = {}
        self._fingerprint = ""
        self.starts = 0
        self.reloads = 0
        self.startup_seconds = 0.0
        self.reload_seconds = 0.0
        self.restart_reasons: list[str] = []

    @property
    def keep(self) -> bool:
        """Whether the engine stays up while the trainer runs."""
        setting = self.cfg.generation.keep_engine
        return setting == "always" or (setting == "auto" and not has_cuda())

    def sampler(self, policy: Path) -> VLLMGroupSampler:
        """A sampler whose engine holds ``policy``'s weights."""
        policy = Path(policy)
        # By content, not path: a policy retrained into the same folder is a new policy.
        fingerprint = model_fingerprint(policy, default_cache(self.workdir)
                                        if self.workdir else None)
        current = self._sampler
        if current is not None and fingerprint == self._fingerprint:
            current.relabel(policy)  # the same weights, perhaps found under another path
            return current
        shape = engine_shape(policy)
        if current is not None:
            changed = shape_difference(self._shape, shape)
            if not shape["weights"]:
                changed = changed or ["weights (not safetensors)"]
            if not changed:
                started = time.perf_counter()
                try:
                    current.reload(policy)
                except BaseException:
                    # Half-loaded weights (vLLM moves layers to the meta device as it goes)
                    # must never be handed out again: the next call starts a new engine.
                    self.restart_reasons.append(f"{policy.name}: the reload failed")
                    self.close()
                    raise
                self._fingerprint = fingerprint
                self.reload_seconds += time.perf_counter() - started
                self.reloads += 1
                return current
            reason = f"{policy.name}: {', '.join(changed)} differ from {current.model_path.name}"
            log.info("new vLLM engine (%s)", reason)
            self.restart_reasons.append(reason)
            self.close()
        self._sampler = self._start(policy)
        self._shape = shape
        self._fingerprint = fingerprint
        self.starts += 1
        self.startup_seconds += self._sampler.startup_seconds
        return self._sampler

    def _start(self, policy: Path) -> VLLMGroupSampler:
        return VLLMGroupSampler(policy, self.cfg, self.workdir)

    @property
    def running(self) -> bool:
        return self._sampler is not None

    def idle(self) -> None:
        """The engine is not needed until the next policy (judging and training run now):
        close it to free its memory unless it is kept."""
        if not self.keep:
            self.close()

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
            self._shape = {}
            self._fingerprint = ""

    def summary(self) -> dict:
        return {"starts": self.starts, "reloads": self.reloads,
                "startup_s": round(self.startup_seconds, 1),
                "reload_s": round(self.reload_seconds, 2),
                "restarts": list(self.restart_reasons)}

    def __enter__(self) -> PolicyEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
