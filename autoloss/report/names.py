"""Display names of run folders (no plotting import: retraining names its runs with them)."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["is_search_loss_file", "search_name"]

# the loss files a search folder holds, named alike in every search (``export --trial N``
# writes ``trial_N_loss.yaml``): a file of these is named by its search
_SEARCH_LOSS_FILE = re.compile(r"(best|identity|middle|trial_\d+)_loss")


def is_search_loss_file(path: Path) -> bool:
    """Whether ``path`` is one of a search folder's own loss files (``best_loss.yaml``,
    ``identity_loss.yaml``, ``middle_loss.yaml``, ``trial_N_loss.yaml``), named alike in every
    search and so known by the search that wrote it."""
    return Path(path).suffix in (".yaml", ".yml") and bool(
        _SEARCH_LOSS_FILE.fullmatch(Path(path).stem))


def search_name(folder: Path) -> str:
    """The name of a search run folder: its own, or for a study's ``OUT/search`` the study's
    (``results/study-miou-camvid/search`` -> ``study-miou-camvid``)."""
    folder = Path(folder)
    return folder.parent.name if folder.name == "search" and folder.parent.name else folder.name
