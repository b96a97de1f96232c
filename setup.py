"""Build step: copy the top-level `sql/` and `data/` folders into the wheel as package data
(`pipeline/_resources/`), so a normal (non-editable) install can find them. Everything else
about the package is declared in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RESOURCES = {"sql": "*.sql", "data": "*.toml"}


class BuildWithResources(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's folders directly
            return
        root = Path(__file__).resolve().parent
        for folder, pattern in RESOURCES.items():
            target = Path(self.build_lib) / "pipeline" / "_resources" / folder
            target.mkdir(parents=True, exist_ok=True)
            for f in sorted((root / folder).glob(pattern)):
                shutil.copy2(f, target / f.name)


setup(cmdclass={"build_py": BuildWithResources})
