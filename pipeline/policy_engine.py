"""One vLLM engine for a loop's successive policies.

Starting an engine costs 20-40 s on a 2-core CPU (a spawned process, the model load, the KV
cache) and closing one another 5 s; loading the next round's weights into the running engine
costs well under a second. So the loop keeps one engine and, each round, loads the new
policy's weights into it in place (vLLM's ``reload_weights``), then drops the prefix cache,
whose blocks hold the old policy's keys and values.

That is only sound when the new policy is the same network with new numbers: the engine's
model, dtype, tokenizer (it detokenizes every sample) and generation config (its EOS ids stop
every sample) were fixed when it started. ``engine_shape`` fingerprints exactly those files;
a policy of another shape gets a new engine, with the reason logged. A trained policy
(full fine-tuning, or LoRA merged into its base) has its base's shape.

On a GPU the engine holds ``generation.gpu_memory_utilization`` of the memory the trainer
needs, so by default it is closed before training (``generation.keep_engine``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from pipeline.chat import TOKENIZER_FILES
from pipeline.config import Config
from pipeline.fingerprints import default_cache, model_fingerprint
from pipeline.generation import VLLMGroupSampler, has_cuda

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


def engine_shape(model_dir: Path) -> dict[str, str]:
    """{file name: digest} of the files that fix an engine, for those the directory has."""
    out = {}
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
    ...     engines.before_training()                     # closes it on a GPU
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
        shape = engine_shape(policy)
        # By content, not path: a policy retrained into the same folder is a new policy.
        fingerprint = model_fingerprint(policy, default_cache(self.workdir)
                                        if self.workdir else None)
        current = self._sampler
        if current is not None and fingerprint == self._fingerprint:
            return current
        if current is not None:
            changed = shape_difference(self._shape, shape)
            if not changed:
                started = time.perf_counter()
                current.reload(policy)
                self._fingerprint = fingerprint
                self.reload_seconds += time.perf_counter() - started
                self.reloads += 1
                return current
            reason = f"{policy.name}: {', '.join(changed)} differ from {current.model_path.name}"
            log.info("new vLLM engine (%s)", reason)
            self.restart_reasons.append(reason)
            self.close()
        self._sampler = VLLMGroupSampler(policy, self.cfg, self.workdir)
        self._shape = shape
        self._fingerprint = fingerprint
        self.starts += 1
        self.startup_seconds += self._sampler.startup_seconds
        return self._sampler

    def before_training(self) -> None:
        """Free the engine's memory for the trainer unless it is to be kept."""
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
