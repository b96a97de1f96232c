"""Judging: every source (verifier, reward models, LLM judges) turns candidate groups into
judgment rows of the one schema, and every failure is kept as a row, never a guess."""
