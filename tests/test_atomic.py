"""Results files are written whole or not at all (autoloss.utils.atomic)."""

from __future__ import annotations

import pytest

from autoloss.utils.atomic import write_atomic, write_text_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "summary.md"
    write_text_atomic(path, "old\n")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "half written \ud800")  # cannot be encoded: fails mid-write
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]

    def crash(tmp):
        tmp.write_text("partial")
        raise KeyboardInterrupt  # e.g. Ctrl-C while writing

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, crash)
    assert path.read_text() == "old\n" and len(list(tmp_path.iterdir())) == 1


def test_the_written_file_is_readable_by_others_and_folders_are_made(tmp_path):
    path = write_text_atomic(tmp_path / "new" / "compare.json", "{}")
    assert path.read_text() == "{}" and (path.stat().st_mode & 0o777) == 0o644
