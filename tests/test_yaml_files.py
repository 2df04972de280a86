"""Experiment files: a missing file, invalid YAML or a non-mapping is a clear error naming the
file, for both experiment loaders (search and train/compare)."""

from __future__ import annotations

import pytest

from autoloss.search_config import load_experiment
from autoloss.train_cli import read_experiment


@pytest.mark.parametrize("load", [load_experiment, read_experiment])
def test_experiment_file_errors(tmp_path, load):
    bad = tmp_path / "bad.yaml"
    bad.write_text("metric: miou\nproxy: {steps: 10\n")
    with pytest.raises(ValueError, match=r"bad\.yaml, line \d+: invalid YAML"):
        load(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- metric\n- miou\n")
    with pytest.raises(ValueError, match=r"list\.yaml: an experiment must be a mapping.*list"):
        load(listed)
    with pytest.raises(FileNotFoundError, match="experiment file .*missing.yaml.* does not exist"):
        load(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    load(empty)  # an empty file is all defaults
