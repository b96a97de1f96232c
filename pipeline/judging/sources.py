"""The configured judges: their source names, fingerprints and the objects that judge.

A source's fingerprint is what produced its judgments: for a reward model its weights'
content (cached by path, size and mtime) and input settings, for a verifier its code, for an
LLM judge the model (its content when served here), the template, the mode, views, score
range and decoding settings. Judgment files carry it in their names (see ``stage``), so a
changed judge never passes off old verdicts as its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config, ConfigError, stable_hash
from pipeline.fingerprints import default_cache, model_fingerprint
from pipeline.hardware import engine_dtype, has_cuda
from pipeline.judging.naming import ensemble_members, ensemble_name, verifier_name
from pipeline.judging.prompts import template
from pipeline.resolve import judge_model_dir, resolve_reward_models

# Bump when the way a source turns candidates into inputs changes (all old judgments stale).
_RM_INPUT_VERSION = 2
_LLM_PROMPT_VERSION = 2


@dataclass(frozen=True)
class SourceSpec:
    source: str  # verifier:NAME, rm:NAME, rm-ensemble:HOW, llm:NAME
    kind: str  # verifier, reward_model, ensemble, llm
    fingerprint: str
    model_dir: Path | None = None


def configured_sources(cfg: Config, workdir: Path) -> list[SourceSpec]:
    """Every machine source of the config, resolved and fingerprinted (models must exist)."""
    j = cfg.judging
    cache = default_cache(workdir)
    specs: list[SourceSpec] = []
    if "verifier" in j.sources:
        from pipeline.judging.verifier import verifier_fingerprint

        specs.append(SourceSpec(f"verifier:{verifier_name(j.verifier)}", "verifier",
                                verifier_fingerprint(j.verifier)))
    if "reward_model" in j.sources:
        rms = []
        for name, path in resolve_reward_models(cfg, workdir):
            fp = stable_hash({"model": model_fingerprint(path, cache),
                              "max_length": j.max_length, "input": _RM_INPUT_VERSION})
            rms.append(SourceSpec(f"rm:{name}", "reward_model", fp, path))
        specs += rms
        ensemble = ensemble_name(cfg)
        if ensemble:
            members = ensemble_members(cfg)
            specs.append(SourceSpec(ensemble, "ensemble", stable_hash(
                [s.fingerprint for s in rms if s.source in members])))
    if "llm" in j.sources:
        specs.append(llm_spec(cfg, workdir))
    return specs


def llm_spec(cfg: Config, workdir: Path) -> SourceSpec:
    q = cfg.llm_judge
    model_dir = judge_model_dir(cfg, workdir)
    # An embedded judge is served here in policy.dtype, resolved for this machine: another
    # precision can break near-ties the other way, so it is part of what judged.
    identity = {"model_content": model_fingerprint(model_dir, default_cache(workdir)),
                "dtype": engine_dtype(cfg.policy.dtype)} \
        if model_dir else {"base_url": q.base_url.rstrip("/"), "model": q.model}
    settings = q.model_dump(include={"api", "mode", "views", "score_low", "score_high",
                                     "structured", "temperature", "max_tokens"})
    fp = stable_hash({**identity, **settings, "template": template(q.mode),
                      "seed": cfg.generation.seed, "prompt": _LLM_PROMPT_VERSION})
    return SourceSpec(f"llm:{q.name}", "llm", fp, model_dir)


def spec_by_source(specs: list[SourceSpec]) -> dict[str, SourceSpec]:
    return {s.source: s for s in specs}


EMBEDDED_NAME = "embedded-judge"  # the model name the embedded server answers to


def embedded_server(cfg: Config, workdir: Path):
    """The embedded judge's server, not started, or None when the judge is remote."""
    from pipeline.judging.server import VllmServer

    model_dir = judge_model_dir(cfg, workdir)
    if model_dir is None:
        return None
    log = Path(workdir) / "logs" / "judge-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    return VllmServer(model_dir, EMBEDDED_NAME, cfg.llm_judge.port, log,
                      dtype=engine_dtype(cfg.policy.dtype))


@contextlib.contextmanager
def judge_endpoint(cfg: Config, workdir: Path) -> Iterator[tuple[str, str]]:
    """(base_url, served model name) of the LLM judge; starts the embedded vLLM server (on
    127.0.0.1, stopped on exit) when ``llm_judge.base_url = "embedded"``."""
    server = embedded_server(cfg, workdir)
    if server is None:
        yield cfg.llm_judge.base_url, cfg.llm_judge.model
        return
    from pipeline.judging.server import serving

    with serving(server) as url:
        yield url, EMBEDDED_NAME


class SharedEndpoint:
    """The judge endpoint, started on first use (or by ``start_early``) and kept until
    ``close``: the loop holds one for all its rounds (the embedded server's start-up costs
    tens of seconds)."""

    def __init__(self, cfg: Config, workdir: Path) -> None:
        self.cfg, self.workdir = cfg, workdir
        self._stack = contextlib.ExitStack()
        self._value: tuple[str, str] | None = None
        self._server = None
        self._early = None  # the server start_early launched, kept for summary()

    def start_early(self) -> bool:
        """Launch the embedded server now without waiting for it, so that its start-up
        overlaps other work (the loop's policy engine start and first generation); ``get``
        then waits for it. Nothing to do for a remote judge, for a config that does not
        judge with the LLM or turns ``llm_judge.start_early`` off, or on a GPU (the policy
        engine is closed there before judging: two engines at once would not fit). True if
        a server was launched."""
        if not (self.cfg.llm_judge.start_early and "llm" in self.cfg.judging.sources) \
                or has_cuda():
            return False
        if self._value is not None or self._server is not None:
            return False
        self._server = embedded_server(self.cfg, self.workdir)
        if self._server is None:
            return False
        self._stack.callback(self._server.stop)
        self._server.start()
        self._early = self._server
        return True

    def get(self) -> tuple[str, str]:
        if self._value is None:
            if self._server is not None:
                self._value = (self._server.wait_ready(), EMBEDDED_NAME)
            else:
                self._value = self._stack.enter_context(judge_endpoint(self.cfg, self.workdir))
        return self._value

    def summary(self) -> dict:
        """Whether the embedded server was started early, and when it answered."""
        early = self._early
        return {"started_early": early is not None,
                "ready_after_s": early.ready_after_s if early is not None else None}

    def close(self) -> None:
        self._stack.close()
        self._value = None
        self._server = None

    def __enter__(self) -> SharedEndpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect_llm_judge(cfg: Config, url: str, model: str, request_budget=None):
    """An ``LLMJudge`` talking to a checked endpoint; a URL that does not answer, or does not
    serve the model, is a ConfigError that says what to fix."""
    from pipeline.judging.llm import JudgeClient, LLMJudge, RequestBudget

    budget = request_budget or RequestBudget(cfg.llm_judge.max_requests)
    client = JudgeClient(cfg.llm_judge, url, model, budget)
    try:
        served = client.check_reachable()
    except Exception as err:  # noqa: BLE001 - any failure here means "fix the URL"
        raise ConfigError(f"llm_judge.base_url: {url} does not answer ({type(err).__name__}: "
                          f"{err}); fix the URL or start the server") from err
    if model not in served:
        raise ConfigError(f"llm_judge.model: {model!r} is not served at {url}; it serves "
                          f"{served}")
    return LLMJudge(cfg.llm_judge, client, seed=cfg.generation.seed)
