"""Display names of run folders (no plotting import: retraining names its runs with them)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["search_name"]


def search_name(folder: Path) -> str:
    """The name of a search run folder: its own, or for a study's ``OUT/search`` the study's
    (``results/study-miou-camvid/search`` -> ``study-miou-camvid``)."""
    folder = Path(folder)
    return folder.parent.name if folder.name == "search" and folder.parent.name else folder.name
