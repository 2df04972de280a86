"""Experiment files: a missing file, invalid YAML or a non-mapping is a clear error naming the
file, for both experiment loaders (search and train/compare)."""

from __future__ import annotations

import pytest

from autoloss.retrain.experiment import read_experiment
from autoloss.search.config import load_experiment


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


@pytest.mark.parametrize("kind", ["experiment", "loss", "space"])
def test_a_key_given_twice_is_an_error_with_both_lines(tmp_path, kind):
    """Plain YAML keeps the last of two equal keys silently; autoloss's files refuse them."""
    from autoloss.losses import read_spec
    from autoloss.search.spaces import load_space

    texts = {"experiment": "metric: miou\ntrials: 4\ntrials: 40\n",
             "loss": "name: dice\nsmooth: 1.0\nsmooth: 2.0\n",
             "space": "metric: miou\ncurves:\n  inter: {kind: bezier, pieces: 2}\n"
                      "  inter: {kind: linear, knots: 3}\n"}
    path = tmp_path / f"{kind}.yaml"
    path.write_text(texts[kind])
    read = {"experiment": load_experiment, "loss": read_spec, "space": load_space}[kind]
    with pytest.raises(ValueError, match=r"line \d: invalid YAML: key '\w+' appears twice "
                                         r"\(lines \d and \d\)"):
        read(str(path))
