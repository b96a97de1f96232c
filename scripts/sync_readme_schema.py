"""Rewrite the README's schema section from pipeline/schema.py (a test checks they match)."""

from pathlib import Path

from pipeline.schema import describe

readme = Path(__file__).resolve().parent.parent / "README.md"
text = readme.read_text()
start = text.index("### `prompts`")
end = text.find("\n## ", start)
readme.write_text(text[:start] + describe() + ("" if end < 0 else text[end:]))
