#!/usr/bin/env bash
# Label Studio for the annotation round-trip test, in its own virtual environment: its pins
# (Django, pydantic, numpy...) differ from the project's, so it never goes into .venv.
# Skipped when the stamp says this version is already installed. `make test` calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
LS_VENV="${LS_VENV:-.venv-label-studio}"
LS_VERSION="${LS_VERSION:-1.23.2}"
PYTHON="${PYTHON:-python3}"
STAMP="$LS_VENV/.installed"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$LS_VERSION" ]]; then
  exit 0
fi
echo "install: label-studio $LS_VERSION into $LS_VENV (about 1 GB, a few minutes once)"
[[ -x "$LS_VENV/bin/python" ]] || "$PYTHON" -m venv "$LS_VENV"
"$LS_VENV/bin/python" -m pip --disable-pip-version-check -q install "label-studio==$LS_VERSION" \
  2>&1 | grep -vE "^WARNING: Location .* is ignored" || true
# An import, not `label-studio --version`: that starts a server on port 8080.
"$LS_VENV/bin/python" -c "import label_studio" \
  || { echo "install: label-studio failed to install into $LS_VENV" >&2; exit 1; }
echo "$LS_VERSION" > "$STAMP"
echo "install: label-studio done"
