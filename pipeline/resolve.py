"""From config values to checked paths, before any work starts.

Every command resolves the paths it will need here first (``preflight``), so a missing model
or prompts file fails in a second with one line naming the setting to change, instead of
after an engine or a Prefect server has started. Config values equal to ``demo`` resolve to
what ``grpo build-demo-model`` builds inside the workdir; every other value is a path.
"""

from __future__ import annotations

import glob
from pathlib import Path

from pipeline.config import DEMO, Config, ConfigError
from pipeline.judging.naming import reward_model_name

DEMO_POLICY_DIR = "models/demo-policy"
DEMO_RM_DIR = "models/demo-rm"
DEMO_JUDGE_DIR = "models/demo-judge"
DEMO_PROMPTS = "prompts/demo-prompts.jsonl"
_BUILD_HINT = "run `grpo build-demo-model` first"


def _demo_hint(cfg: Config, setting: str, what: str) -> str:
    """A missing demo file: build it, or (for a user's own run) point the setting elsewhere."""
    if cfg.policy.model == DEMO:
        return _BUILD_HINT
    return (f"'demo' means the demo's {what}, which `grpo build-demo-model` builds; with your "
            f"own model, set {setting} to your own")


def _demo_or_path(value: str, workdir: Path, demo_rel: str) -> Path:
    return Path(workdir) / demo_rel if value == DEMO else Path(value).expanduser()


def require_model_dir(path: Path, setting: str, hint: str) -> Path:
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"{setting}: no model at {path}; {hint}")
    return Path(path)


def policy_dir(cfg: Config, workdir: Path) -> Path:
    if not cfg.policy.model:
        raise ConfigError("policy.model: not set; point it at a Hugging Face causal-LM "
                          "directory (or 'demo')")
    return _demo_or_path(cfg.policy.model, workdir, DEMO_POLICY_DIR)


def resolve_policy(cfg: Config, workdir: Path) -> Path:
    hint = _BUILD_HINT if cfg.policy.model == DEMO else \
        "point policy.model at a Hugging Face causal-LM directory (with config.json)"
    return require_model_dir(policy_dir(cfg, workdir), "policy.model", hint)


def resolve_reward_models(cfg: Config, workdir: Path) -> list[tuple[str, Path]]:
    out = []
    for spec in cfg.judging.reward_models:
        path = _demo_or_path(spec, workdir, DEMO_RM_DIR)
        hint = _demo_hint(cfg, "judging.reward_models", "reward model") if spec == DEMO else (
            "set judging.reward_models to sequence-classification model directories "
            "(or drop reward_model from judging.sources)")
        out.append((reward_model_name(spec), require_model_dir(path, "judging.reward_models",
                                                               hint)))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"judging.reward_models: two models share a name ({names}); each "
                          "is the source rm:DIRNAME, so give them distinct directory names")
    return out


def judge_model_dir(cfg: Config, workdir: Path) -> Path | None:
    """The directory the embedded judge server loads; None for a remote endpoint."""
    q = cfg.llm_judge
    if q.base_url != "embedded":
        return None
    path = _demo_or_path(q.model, workdir, DEMO_JUDGE_DIR)
    hint = _demo_hint(cfg, "llm_judge.model", "judge model") if q.model == DEMO else \
        "set llm_judge.model to a model directory to serve (base_url = 'embedded')"
    return require_model_dir(path, "llm_judge.model", hint)


def prompt_files(cfg: Config, workdir: Path) -> list[Path]:
    """The prompts file(s), or a ``save_to_disk`` directory as a one-element list."""
    spec = cfg.prompts.path
    if not spec:
        raise ConfigError("prompts.path: not set; point it at your prompts (.jsonl, .json, "
                          ".csv or .parquet, a glob, or a datasets.save_to_disk directory)")
    if spec == DEMO:
        path = Path(workdir) / DEMO_PROMPTS
        if not path.is_file():
            raise ConfigError(f"prompts.path: no demo prompts at {path}; "
                              + _demo_hint(cfg, "prompts.path", "prompts file"))
        return [path]
    path = Path(spec).expanduser()
    if path.is_dir():
        return [path]
    matches = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
    if not matches:
        raise ConfigError(f"prompts.path: no file matches {spec}")
    return matches


def demo_judges_used(cfg: Config) -> dict[str, bool]:
    """Which of the demo's judges the config's judging uses: the demo reward model (a
    ``demo`` entry of judging.reward_models with reward_model among the sources) and the
    demo LLM judge (llm among the sources, served embedded, llm_judge.model = demo).
    ``grpo build-demo-model`` builds only these (each takes minutes to train)."""
    sources = cfg.judging.sources
    q = cfg.llm_judge
    return {"reward_model": "reward_model" in sources and DEMO in cfg.judging.reward_models,
            "judge": "llm" in sources and q.base_url == "embedded" and q.model == DEMO}


def preflight(cfg: Config, workdir: Path, *, policy: bool = False, prompts: bool = False,
              judges: bool = False) -> None:
    """Resolve everything a command will touch; raise ConfigError on the first problem."""
    if policy:
        resolve_policy(cfg, workdir)
    if prompts:
        prompt_files(cfg, workdir)
    if judges:
        sources = cfg.judging.sources
        if "reward_model" in sources:
            resolve_reward_models(cfg, workdir)
        if "verifier" in sources:
            from pipeline.judging.verifier import load_verifier

            load_verifier(cfg.judging.verifier)
        if "llm" in sources:
            judge_model_dir(cfg, workdir)
