"""A user's own PNG folder: the flat images/ + masks/ layout with carved val/test splits, the
void-label trap (255 without ?ignore_index never makes a 256-class dataset), the errors that say
how to fix a layout, and ``autoloss info`` on such a folder (issue 25, item 3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autoloss.data import dataset_splits, describe_dataset, format_description, load_dataset
from autoloss.data.carve import carve_indices

REPO = Path(__file__).resolve().parents[1]


def _flat(root: Path, n: int = 10, *, void: int | None = 255, size: tuple[int, int] = (6, 8)
          ) -> Path:
    """``n`` RGB images and 3-class masks (``void`` in the first row's first 3 pixels)."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            root / "images" / f"img{i:02d}.png")
        mask = rng.integers(0, 3, size, dtype=np.uint8)
        if void is not None:
            mask[0, :3] = void
        Image.fromarray(mask).save(root / "masks" / f"img{i:02d}.png")
    return root


# ---- the void-label trap ----------------------------------------------------------------------


def test_a_255_void_label_without_ignore_index_is_an_error_not_256_classes(tmp_path):
    root = _flat(tmp_path / "data")
    with pytest.raises(ValueError) as err:
        load_dataset(f"folder:{root}")
    msg = str(err.value)
    assert "[0, 1, 2, 255]" in msg and "256 classes" in msg and "252 of which never occur" in msg
    assert "'?ignore_index=255'" in msg and "'?num_classes=256'" in msg
    with pytest.raises(ValueError, match="256 classes"):
        describe_dataset(f"folder:{root}")  # autoloss info: no 256-row table
    ds = load_dataset(f"folder:{root}?ignore_index=255")
    assert (ds.num_classes, ds.ignore_index) == (3, 255)
    assert int(ds[0][1][0, 0]) == 255 and int(ds[0][1].max()) == 255


def test_a_label_beyond_num_classes_fails_at_load_time_naming_value_and_mask(tmp_path):
    root = _flat(tmp_path / "data")
    with pytest.raises(ValueError) as err:
        load_dataset(f"folder:{root}?num_classes=3", "train")  # before any item is read
    msg = str(err.value)
    assert "[255]" in msg and "[0, 3)" in msg and "masks/img00.png" in msg
    assert "'?ignore_index=255'" in msg and "at least 256" in msg


def test_dense_labels_and_a_missing_class_still_infer_num_classes(tmp_path):
    """Inference refuses only mostly-empty class ranges: {0, 1, 3} is 4 classes (class 2 absent
    from the data), binary 0/1 masks are 2 classes."""
    root = _flat(tmp_path / "gap", n=2, void=None)
    for mask in (root / "masks").iterdir():
        labels = np.array(Image.open(mask))
        Image.fromarray(np.where(labels == 2, 3, labels).astype(np.uint8)).save(mask)
    assert load_dataset(f"folder:{root}").num_classes == 4
    binary = tmp_path / "binary"
    _flat(binary, n=2, void=None)
    for mask in (binary / "masks").iterdir():
        Image.fromarray((np.array(Image.open(mask)) > 0).astype(np.uint8)).save(mask)
    assert load_dataset(f"folder:{binary}").num_classes == 2


def test_binary_masks_saved_as_0_255_are_refused_with_the_fix(tmp_path):
    root = tmp_path / "fg255"
    _flat(root, n=2, void=None)
    for mask in (root / "masks").iterdir():
        Image.fromarray(np.where(np.array(Image.open(mask)) > 0, 255, 0).astype(np.uint8)).save(mask)
    with pytest.raises(ValueError, match=r"\[0, 255\].*re-saved as 0/1"):
        load_dataset(f"folder:{root}")


def test_an_npz_with_a_void_255_needs_ignore_index_too(tmp_path):
    labels = np.random.default_rng(0).integers(0, 4, (3, 4, 4)).astype(np.uint8)
    labels[:, 0, 0] = 255
    np.savez(tmp_path / "train.npz", images=np.zeros((3, 4, 4, 3), np.uint8), labels=labels)
    with pytest.raises(ValueError, match=r"\[0, 1, 2, 3, 255\].*'\?ignore_index=255'"):
        load_dataset(f"npz:{tmp_path}")
    assert load_dataset(f"npz:{tmp_path}?ignore_index=255").num_classes == 4


# ---- the flat layout: one split unless val/test are carved ------------------------------------


def test_flat_folder_without_val_says_how_to_lay_out_or_carve(tmp_path):
    root = _flat(tmp_path / "data")
    spec = f"folder:{root}?ignore_index=255"
    assert dataset_splits(spec) == ["train"]  # nothing carved by default
    with pytest.raises(ValueError) as err:
        load_dataset(spec, "val")
    msg = str(err.value)
    assert "no split 'val'" in msg and f"'{spec}&val_fraction=0.2'" in msg
    assert "PATH/train/{images,masks} and PATH/val/{images,masks}" in msg


def test_carved_splits_are_deterministic_disjoint_and_cover_train(tmp_path):
    root = _flat(tmp_path / "data", n=10)
    spec = f"folder:{root}?ignore_index=255&val_fraction=0.2&test_fraction=0.3"
    assert dataset_splits(spec) == ["train", "val", "test"]
    names = {split: load_dataset(spec, split).item_names for split in ("train", "val", "test")}
    assert [len(names[s]) for s in ("train", "val", "test")] == [5, 2, 3]
    every = [n for split in names.values() for n in split]
    assert sorted(every) == [f"img{i:02d}" for i in range(10)]  # disjoint and complete
    again = {split: load_dataset(spec, split).item_names for split in names}
    assert again == names  # reproducible across calls
    assert load_dataset(spec, "val").split == "val"
    other = load_dataset(spec.replace("test_fraction=0.3", "test_fraction=0.3&split_seed=1"),
                         "val").item_names
    assert other != names["val"]
    # the test images stay put when only val_fraction changes (test is drawn first)
    wider = spec.replace("val_fraction=0.2", "val_fraction=0.4")
    assert load_dataset(wider, "test").item_names == names["test"]


def test_carved_splits_in_a_fresh_process_are_the_same(tmp_path):
    root = _flat(tmp_path / "data", n=7)
    spec = f"folder:{root}?ignore_index=255&val_fraction=0.3"
    code = ("from autoloss.data import load_dataset; import sys; "
            "print(','.join(load_dataset(sys.argv[1], 'val').item_names))")
    out = subprocess.run([sys.executable, "-c", code, spec], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == ",".join(load_dataset(spec, "val").item_names)


def test_carved_train_statistics_come_from_the_carved_train_images(tmp_path):
    root = _flat(tmp_path / "data", n=6)
    spec = f"folder:{root}?ignore_index=255&val_fraction=0.5"
    train, val = load_dataset(spec, "train"), load_dataset(spec, "val")
    images = np.stack([np.array(Image.open(root / "images" / f"{n}.png")) for n in
                       train.item_names]) / 255.0
    np.testing.assert_allclose(train.mean, images.reshape(-1, 3).mean(0), rtol=1e-9)
    assert val.mean == train.mean  # val is normalised with the train split's statistics


def test_carve_indices_contract():
    parts = carve_indices(10, val_fraction=0.2, test_fraction=0.1, seed=3)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [7, 2, 1]
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(10))
    assert all(np.all(np.diff(v) > 0) for v in parts.values())
    assert len(carve_indices(3, val_fraction=0.01)["val"]) == 1  # a positive share: >= 1 image
    with pytest.raises(ValueError, match="leaves no image to train on"):
        carve_indices(2, val_fraction=0.5, test_fraction=0.4)
    with pytest.raises(ValueError, match=r"val_fraction must be a number in \[0, 1\)"):
        carve_indices(5, val_fraction=1.0)


def test_carving_errors_name_the_option(tmp_path):
    root = _flat(tmp_path / "data", n=4)
    with pytest.raises(ValueError, match=r"option val_fraction='1.5' is invalid; expected a number"):
        dataset_splits(f"folder:{root}?val_fraction=1.5")
    with pytest.raises(ValueError, match="split_seed has nothing to seed"):
        dataset_splits(f"folder:{root}?split_seed=2")
    for split in ("train", "val"):
        _flat(tmp_path / "split" / split, n=2)
    with pytest.raises(ValueError, match="already has a 'val' split.*drop val_fraction"):
        dataset_splits(f"folder:{tmp_path / 'split'}?val_fraction=0.2")
    with pytest.raises(ValueError, match="unknown option 'val_fractoin'.*did you mean 'val_fraction'"):
        dataset_splits(f"folder:{root}?val_fractoin=0.2")


# ---- autoloss info ----------------------------------------------------------------------------


def test_info_on_a_flat_folder_lists_the_classes_and_says_what_is_missing(tmp_path):
    root = _flat(tmp_path / "data", n=5)
    text = format_description(describe_dataset(f"folder:{root}?ignore_index=255"))
    rows = [line for line in text.splitlines() if line[:1].isdigit()]
    assert [r.split()[0] for r in rows] == ["0", "1", "2", "255"]  # 3 classes + the void row
    assert "% of all pixels    % of labelled pixels" in text  # headers no longer run together
    assert "note: no 'val' split, which a search" in text and "val_fraction=0.2" in text
    carved = format_description(describe_dataset(
        f"folder:{root}?ignore_index=255&val_fraction=0.4&test_fraction=0.2"))
    assert "note: val (40 %) and test (20 %) carved out of train with split_seed 0" in carved
    assert "no 'val' split" not in carved


def test_info_cli_prints_one_line_for_the_255_trap(tmp_path):
    root = _flat(tmp_path / "data", n=2)
    out = subprocess.run([sys.executable, "-m", "autoloss.cli", "info", f"folder:{root}"],
                         capture_output=True, text=True, env={"PYTHONPATH": str(REPO),
                                                              "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "'?ignore_index=255'" in out.stderr


def test_the_search_and_compare_say_how_to_get_the_missing_split(tmp_path):
    """The proxy (search) and the retraining runs (compare) check the splits before any work;
    their errors carry the same hint as load_dataset's."""
    from autoloss.retrain.runs import load_splits
    from autoloss.train.proxy import build_proxy

    root = _flat(tmp_path / "data", n=4)
    spec = f"folder:{root}?ignore_index=255"
    with pytest.raises(ValueError, match=r"'val'.*\?ignore_index=255&val_fraction=0.2'"):
        build_proxy({"data": spec}, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match=r"test_split='test' is not a split.*&test_fraction=0.2'"):
        load_splits(spec + "&val_fraction=0.25", val_split="val", test_split="test")
    carved = load_splits(spec + "&val_fraction=0.25&test_fraction=0.25", val_split="val",
                         test_split="test")
    assert (len(carved.train), len(carved.val), len(carved.test)) == (2, 1, 1)
