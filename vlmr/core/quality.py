"""Strict mode: one switch that turns every warning about data or calibration quality into an error.

    from vlmr.core.quality import quality_issue
    quality_issue("split 'val': 52 of 200 frames skipped (truncated shard val-000000.tar)", strict=cfg.strict)

Without strict the message is a `QualityWarning` (one "warning: ..." line on the command line) and the
stage goes on; the count or flag behind it is recorded in the stage's outputs. With strict it raises a
VlmrError carrying the same message. Every stage config has a `strict` key and every stage command a
`--strict` flag; docs/DESIGN.md ("Strict mode") lists what each stage checks.
"""

from __future__ import annotations

import warnings

from vlmr.core.errors import VlmrError

STRICT_HELP = "turn every warning about data or calibration quality into an error (docs/DESIGN.md, 'Strict mode')"


class QualityWarning(UserWarning):
    """A warning about data or calibration quality: an error under strict mode."""


class StrictModeError(VlmrError):
    """A data or calibration quality problem, raised because strict mode is on."""


def quality_issue(message: str, strict: bool, category: type[QualityWarning] = QualityWarning,
                  stacklevel: int = 2) -> None:
    """Warn about a quality problem, or raise it as a StrictModeError when `strict`."""
    if strict:
        raise StrictModeError(f"{message} [strict mode: this warning is an error; fix the cause, or run "
                              "without --strict (strict: false) to go on with a warning]")
    warnings.warn(message, category, stacklevel=stacklevel + 1)
