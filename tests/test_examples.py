"""The worked example ``examples/own_model_and_data.py``: its pieces against autoloss (fast) and
the whole script in a subprocess, as a user runs it (~10-15 s, run by CI: issue 25 asks
for the example to run there)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from autoloss.data import dataset_splits, load_dataset

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "own_model_and_data.py"


def _example():
    spec = importlib.util.spec_from_file_location("own_model_and_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_examples_data_and_model_fit_autoloss(tmp_path, single_thread):
    """Its PNG folders are a ``folder:`` dataset with the three splits and classes it says, its
    own loader reads the same pixels, and its CNN outputs half-resolution logits."""
    example = _example()
    example.write_dataset(tmp_path, counts={"train": 4, "val": 2, "test": 2})
    spec = f"folder:{tmp_path}"
    assert dataset_splits(spec) == ["train", "val", "test"]
    train = load_dataset(spec, "train")
    assert (train.num_classes, train.ignore_index, len(train)) == (example.CLASSES, None, 4)
    images, labels = example.read_split(tmp_path, "train")
    stored_images, stored_labels = train.arrays()
    assert torch.equal(labels, torch.from_numpy(stored_labels.astype("int64")))
    assert torch.allclose(images, torch.from_numpy(stored_images).permute(0, 3, 1, 2) / 255)
    assert set(labels.unique().tolist()) == {0, 1, 2}
    logits = example.build_cnn(3, example.CLASSES)(images)
    assert logits.shape == (4, example.CLASSES, 16, 16)


def test_the_example_runs_end_to_end(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "out"
    assert len(list((out / "data" / "train" / "images").glob("*.png"))) == 48
    assert len(list((out / "data" / "val" / "masks").glob("*.png"))) == 16
    loss_file = out / "search" / "best_loss.yaml"
    provenance = yaml.safe_load(loss_file.read_text())["provenance"]
    assert provenance["model"]["model"]["builder"] == "__main__:build_cnn"  # its own CNN
    assert provenance["proxy"]["model"] == "__main__:build_cnn"
    printed = re.search(r"paired difference .*: mean ([+-]\d+\.\d+), 95 % interval "
                        r"\[([+-]\d+\.\d+), ([+-]\d+\.\d+)\], better on (\d)/3 seeds", done.stdout)
    assert printed is not None, done.stdout
    mean, low, high = (float(printed.group(i)) for i in (1, 2, 3))
    assert all(math.isfinite(v) for v in (mean, low, high)) and low <= mean <= high
    seeds = re.findall(r"seed \d: test mIoU searched (\d+\.\d+), cross-entropy (\d+\.\d+)",
                       done.stdout)
    assert len(seeds) == 3 and all(0 <= float(v) <= 100 for pair in seeds for v in pair)
    record = json.loads((out / "results.json").read_text())
    assert record["paired"]["n"] == 3
    assert record["paired"]["mean"] == pytest.approx(mean, abs=0.006)
