"""Human rankings: groups out to annotators, their rankings back in.

- ``exporter``: ``grpo export-annotation`` (CSV + JSON lines, Label Studio, Argilla), with
  ``selection`` choosing the groups (random, disagreement, uncertainty, cycles);
- ``importer``: ``grpo import-human`` for every format (``rows``, ``label_studio``,
  ``argilla`` read a file into ``entries``; ``checks`` holds them against the store);
- ``history``: the rule for corrected files (the newest import from an annotator on a group
  replaces the earlier one, which moves to ``superseded_human``).
"""

from pipeline.annotation.exporter import FORMATS, ExportResult, export_annotation
from pipeline.annotation.importer import ImportFileError, ImportReport, import_human_file
from pipeline.annotation.selection import SELECTIONS

__all__ = ["FORMATS", "SELECTIONS", "ExportResult", "ImportFileError", "ImportReport",
           "export_annotation", "import_human_file"]
