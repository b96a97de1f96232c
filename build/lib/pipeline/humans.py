"""Kept so ``from pipeline.humans import ...`` keeps working; the code is in
``pipeline/annotation/``."""

from pipeline.annotation import (
    ExportResult,
    ImportFileError,
    ImportReport,
    export_annotation,
    import_human_file,
)

__all__ = ["ExportResult", "ImportFileError", "ImportReport", "export_annotation",
           "import_human_file"]
