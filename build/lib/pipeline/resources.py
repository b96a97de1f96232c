"""Where the project's data files are: `sql/` (audit queries) and `data/` (the demo config).

In a source checkout (editable install, tests, `make`) they are the top-level folders beside
`pipeline/`. A wheel carries copies inside the package (`pipeline/_resources/`, put there by
the build step in setup.py), so `grpo audit` and the demo config work from a normal install.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent
_IN_CHECKOUT = (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "sql").is_dir()
RESOURCE_DIRS = ("sql", "data")


def resource_dir(name: str) -> Path:
    if name not in RESOURCE_DIRS:
        raise KeyError(name)
    return _CHECKOUT / name if _IN_CHECKOUT else _PACKAGE / "_resources" / name


SQL_DIR = resource_dir("sql")
DATA_DIR = resource_dir("data")
DEMO_CONFIG = DATA_DIR / "demo.toml"
