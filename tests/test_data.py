"""Tests for autoloss.data: the shapes generator, file formats, specs, describe and augmentation."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from autoloss.data import (
    CAMVID_CLASSES,
    VOC_CLASSES,
    Augment,
    dataset_splits,
    describe_dataset,
    format_description,
    generate_shapes,
    load_dataset,
    normalize,
    parse_spec,
)

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "camvid"


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


# ---- shapes ---------------------------------------------------------------------------------


def test_shapes_deterministic_and_splits_differ():
    a = load_dataset("shapes?n=64", "train").arrays()
    b = load_dataset("shapes?n=64", "train").arrays()
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    other_seed = load_dataset("shapes?n=64&seed=1", "train").arrays()
    assert not np.array_equal(a[0], other_seed[0])
    val = load_dataset("shapes?n=64", "val").arrays()
    assert val[0].shape == (16, 64, 64, 3) and not np.array_equal(a[0][:16], val[0])
    # a larger n only appends images
    bigger = load_dataset("shapes?n=100", "train").arrays()
    assert np.array_equal(bigger[0][:64], a[0]) and np.array_equal(bigger[1][:64], a[1])


@pytest.fixture(scope="module")
def shapes_train():
    return load_dataset("shapes", "train")


def test_shapes_defaults_and_item_types(shapes_train):
    sizes = {s: len(load_dataset("shapes", s)) for s in ("val", "test")}
    assert dataset_splits("shapes") == ["train", "val", "test"] and len(shapes_train) == 512
    assert sizes == {"val": 128, "test": 256}
    ds = load_dataset("shapes", "val")
    assert (ds.num_classes, ds.ignore_index, ds.in_channels, ds.name) == (6, 255, 3, "shapes")
    assert ds.class_names[0] == "background" and len(ds.class_names) == 6
    image, label = ds[3]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
    assert label.dtype == torch.int64 and label.shape == (64, 64)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    images, labels = ds.arrays()
    assert torch.equal(image, torch.from_numpy(images[3]).permute(2, 0, 1).float() / 255)
    assert torch.equal(label, torch.from_numpy(labels[3]).long())
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch[0].shape == (4, 3, 64, 64) and batch[1].shape == (4, 64, 64)


def test_shapes_class_balance(shapes_train):
    images, labels = shapes_train.arrays()
    counts = np.bincount(labels.ravel(), minlength=256)
    freq = counts / labels.size
    assert freq[0] > 0.6 and freq[0] == freq[:6].max()  # dominant background
    assert all(counts[c] > 0 for c in range(6))  # every class present
    assert set(np.flatnonzero(counts)) == {0, 1, 2, 3, 4, 5, 255}
    assert 0.002 < freq[255] < 0.05  # a small ignored band
    assert freq[5] < 0.01 and freq[5] < freq[4] < freq[3] < freq[2]  # imbalance, rare class
    assert (labels == 3).any(axis=(1, 2)).mean() > 0.8  # thin lines in most images
    # lines are thin: a 3x3 erosion removes most line pixels, but keeps most rectangle pixels
    eroded = ndimage.binary_erosion(labels == 3, structure=np.ones((1, 3, 3), bool))
    assert eroded.sum() < 0.3 * (labels == 3).sum()
    rect_eroded = ndimage.binary_erosion(labels == 2, structure=np.ones((1, 3, 3), bool))
    assert rect_eroded.sum() > 0.5 * (labels == 2).sum()
    # dots are small: connected components of a few pixels
    within_image = np.zeros((3, 3, 3), bool)
    within_image[1] = True
    comp, n = ndimage.label(labels[:64] == 4, structure=within_image)
    sizes = np.bincount(comp.ravel())[1:]
    assert n > 50 and np.median(sizes) <= 13
    # colour alone does not separate classes: per-class mean colours overlap within 2 std
    pix = images.reshape(-1, 3).astype(float)
    flat = labels.ravel()
    blob, dot = pix[flat == 1], pix[flat == 4]
    assert np.all(np.abs(blob.mean(0) - dot.mean(0)) < 2 * blob.std(0))


def test_shapes_generation_time_and_ignore_none():
    generate_shapes(8)
    start = time.process_time()  # CPU time: robust to other jobs on the machine
    for stream, n in enumerate((512, 128, 256)):
        generate_shapes(n, stream=stream)
    assert time.process_time() - start < 2.0
    ds = load_dataset("shapes?n=8&ignore_index=none&size=32x48", "train")
    assert ds.ignore_index is None and ds.arrays()[1].max() <= 5
    assert ds.arrays()[0].shape == (8, 32, 48, 3)


def test_mean_std_from_train_split_and_options():
    train = load_dataset("shapes?n=32", "train")
    x = train.arrays()[0].reshape(-1, 3) / 255.0
    np.testing.assert_allclose(train.mean, x.mean(0), atol=1e-9)
    np.testing.assert_allclose(train.std, x.std(0), atol=1e-9)
    val = load_dataset("shapes?n=32", "val")
    assert val.mean == train.mean and val.std == train.std
    sub = load_dataset("shapes?n=32", "train", subset=4)
    assert sub.mean == train.mean
    given = load_dataset("shapes?n=32&mean=0.5,0.5,0.5&std=0.25,0.25,0.25", "val")
    assert given.mean == (0.5, 0.5, 0.5) and given.std == (0.25, 0.25, 0.25)
    with pytest.raises(ValueError, match="mean must hold 3"):
        load_dataset("shapes?n=32&mean=0.5,0.5", "val")


# ---- npz --------------------------------------------------------------------------------------


def _npz_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "npzdata"
    root.mkdir()
    for split, n in (("train", 10), ("val", 4)):
        labels = rng.integers(0, 4, (n, 6, 8)).astype(np.uint8)
        if split == "val":
            labels[0, 0, 0] = 4  # the largest label lives in val only
        images = rng.integers(0, 256, (n, 6, 8, 3)).astype(np.uint8)
        names = np.array([f"{split}{i}" for i in range(n)])
        np.savez(root / f"{split}.npz", images=images, labels=labels, names=names)
    return root


def test_npz_folder_inference_and_subsets(tmp_path):
    root = _npz_folder(tmp_path)
    spec = f"npz:{root}"
    assert dataset_splits(spec) == ["train", "val"]
    ds = load_dataset(spec, "train")
    assert (ds.num_classes, ds.ignore_index, ds.in_channels) == (5, None, 3)  # max over splits
    assert ds.class_names == [f"class{i}" for i in range(5)] and ds.item_names[1] == "train1"
    stored = np.load(root / "train.npz")
    images, labels = ds.arrays()
    assert np.array_equal(images, stored["images"]) and np.array_equal(labels, stored["labels"])
    first = load_dataset(spec, "train", subset=3)
    assert np.array_equal(first.arrays()[0], stored["images"][:3])
    r1 = load_dataset(spec, "train", subset=4, subset_seed=7)
    r2 = load_dataset(spec, "train", subset=4, subset_seed=7)
    r3 = load_dataset(spec, "train", subset=4, subset_seed=8)
    idx = [int(n[5:]) for n in r1.item_names]
    assert r1.item_names == r2.item_names and r1.item_names != r3.item_names
    assert len(set(idx)) == 4 and np.array_equal(r1.arrays()[1], stored["labels"][idx])
    with pytest.raises(ValueError, match=r"subset must be an int in \[1, 10\]"):
        load_dataset(spec, "train", subset=11)
    with pytest.raises(ValueError, match=r"no split 'test'; available splits: \['train', 'val'\]"):
        load_dataset(spec, "test")


def test_npz_options_grey_single_file_and_stored_metadata(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, (5, 4, 6)).astype(np.int64)
    labels[0, 0, :2] = 255
    grey = rng.integers(0, 256, (5, 4, 6)).astype(np.uint8)
    file = tmp_path / "mydata.npz"
    np.savez(file, images=grey, labels=labels)
    ds = load_dataset(f"npz:{file}?num_classes=3&ignore_index=255", "mydata")
    assert dataset_splits(f"npz:{file}") == ["mydata"]
    assert (ds.num_classes, ds.ignore_index, ds.in_channels) == (3, 255, 1)
    image, label = ds[0]
    assert image.shape == (1, 4, 6) and int(label[0, 0]) == 255
    assert torch.allclose(image[0], torch.from_numpy(grey[0]).float() / 255)
    with pytest.raises(ValueError, match=r"\[0, 1, 2, 255\].*256 classes.*'\?ignore_index=255'"):
        load_dataset(f"npz:{file}", "mydata")  # no options: 255 would make 256 classes
    assert load_dataset(f"npz:{file}?num_classes=256", "mydata").num_classes == 256  # if meant
    resized = load_dataset(f"npz:{file}?num_classes=3&ignore_index=255&size=8x12", "mydata")
    assert resized.arrays()[0].shape == (5, 8, 12, 1)
    assert np.array_equal(resized.arrays()[1][:, ::2, ::2], labels)  # nearest keeps values
    # metadata stored in the npz
    file2 = tmp_path / "meta" / "train.npz"
    file2.parent.mkdir()
    np.savez(file2, images=grey, labels=labels, num_classes=np.array(4),
             ignore_index=np.array(255), class_names=np.array(["a", "b", "c", "d"]))
    meta = load_dataset(f"npz:{file2.parent}", "train")
    assert (meta.num_classes, meta.ignore_index, meta.class_names) == (4, 255, list("abcd"))


def test_npz_label_and_layout_errors(tmp_path):
    file = tmp_path / "train.npz"
    labels = np.zeros((2, 4, 4), np.uint8)
    labels[1, 2, 2] = 7
    np.savez(file, images=np.zeros((2, 4, 4, 3), np.uint8), labels=labels)
    with pytest.raises(ValueError) as err:
        load_dataset(f"npz:{tmp_path}?num_classes=5&ignore_index=255", "train")
    msg = str(err.value)
    assert str(file) in msg and "image 1" in msg and "[7]" in msg and "[0, 5)" in msg
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 4, 4, 3), np.uint8),
             labels=np.zeros((2, 4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"images \(2, 4, 4, 3\) and labels \(2, 4, 5\)"):
        load_dataset(f"npz:{tmp_path}", "bad")
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="no array"):
        load_dataset(f"npz:{tmp_path / 'nolabels.npz'}", "nolabels")
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        load_dataset(f"npz:{tmp_path / 'does-not-exist'}")


# ---- image folders ----------------------------------------------------------------------------


def _folder(root: Path, n: int = 3, size: tuple[int, int] = (6, 8), split: str = "") -> None:
    rng = np.random.default_rng(len(split))
    base = root / split if split else root
    for i in range(n):
        _png(base / "images" / f"img{i}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        _png(base / "masks" / f"img{i}.png", rng.integers(0, 3, size, dtype=np.uint8))


def test_folder_flat_and_split_layouts(tmp_path):
    _folder(tmp_path / "flat")
    ds = load_dataset(f"folder:{tmp_path / 'flat'}?ignore_index=255")
    assert dataset_splits(f"folder:{tmp_path / 'flat'}") == ["train"]
    assert len(ds) == 3 and ds.num_classes == 3 and ds.ignore_index == 255
    image, label = ds[1]
    expected = np.array(Image.open(tmp_path / "flat" / "images" / "img1.png"))
    assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1).float() / 255)
    assert np.array_equal(label.numpy(), np.array(Image.open(
        tmp_path / "flat" / "masks" / "img1.png")))
    assert ds.arrays()[0].shape == (3, 6, 8, 3)
    for split in ("train", "val"):
        _folder(tmp_path / "split", split=split)
    assert dataset_splits(f"folder:{tmp_path / 'split'}") == ["train", "val"]
    val = load_dataset(f"folder:{tmp_path / 'split'}?num_classes=4&size=12x16", "val")
    assert val.num_classes == 4 and val[0][0].shape == (3, 12, 16) and val[0][1].shape == (12, 16)
    grey = tmp_path / "grey"
    _png(grey / "images" / "a.png", np.full((4, 4), 128, np.uint8))
    _png(grey / "labels" / "a.png", np.ones((4, 4), np.uint8))
    g = load_dataset(f"folder:{grey}")
    assert g.in_channels == 1 and g[0][0].shape == (1, 4, 4) and g.num_classes == 2


def test_folder_errors(tmp_path):
    _folder(tmp_path / "mismatch")
    _png(tmp_path / "mismatch" / "masks" / "img2.png", np.zeros((5, 8), np.uint8))
    ds = load_dataset(f"folder:{tmp_path / 'mismatch'}?num_classes=3")
    with pytest.raises(ValueError) as err:
        ds[2]
    msg = str(err.value)
    assert "images/img2.png" in msg and "masks/img2.png" in msg and "6x8" in msg and "5x8" in msg
    _folder(tmp_path / "range")
    _png(tmp_path / "range" / "masks" / "img0.png", np.full((6, 8), 9, np.uint8))
    with pytest.raises(ValueError) as err:  # at load time, not at the first batch
        load_dataset(f"folder:{tmp_path / 'range'}?num_classes=3&ignore_index=255")
    msg = str(err.value)
    assert "masks/img0.png" in msg and "[9]" in msg and "[0, 3)" in msg
    assert "'?ignore_index=9'" in msg and "'?num_classes=' to at least 10" in msg
    with pytest.raises(ValueError, match="outside"):
        describe_dataset(f"folder:{tmp_path / 'range'}?num_classes=3&ignore_index=255")
    _folder(tmp_path / "rgbmask")
    _png(tmp_path / "rgbmask" / "masks" / "img0.png", np.zeros((6, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="mode RGB"):
        load_dataset(f"folder:{tmp_path / 'rgbmask'}?num_classes=3")[0]
    _folder(tmp_path / "missing")
    (tmp_path / "missing" / "masks" / "img1.png").unlink()
    with pytest.raises(ValueError, match=r"have no mask \['img1'\]"):
        load_dataset(f"folder:{tmp_path / 'missing'}?num_classes=3")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither images/"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    _folder(tmp_path / "sizes")
    _png(tmp_path / "sizes" / "images" / "img0.png", np.zeros((5, 5, 3), np.uint8))
    _png(tmp_path / "sizes" / "masks" / "img0.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match=r"different sizes.*size=HxW"):
        load_dataset(f"folder:{tmp_path / 'sizes'}?num_classes=3").arrays()


def test_camvid_png_layout(tmp_path):
    rng = np.random.default_rng(4)
    for split in ("train", "val"):
        for i in range(2):
            _png(tmp_path / split / f"0001TP_{i:06d}.png",
                 rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
            _png(tmp_path / f"{split}annot" / f"0001TP_{i:06d}.png",
                 rng.integers(0, 12, (6, 8), dtype=np.uint8))
    spec = f"camvid:{tmp_path}"
    assert dataset_splits(spec) == ["train", "val"]
    ds = load_dataset(spec, "val")
    assert (ds.num_classes, ds.ignore_index, ds.class_names) == (11, 11, list(CAMVID_CLASSES))
    expected = np.array(Image.open(tmp_path / "valannot" / "0001TP_000001.png"))
    assert np.array_equal(ds[1][1].numpy(), expected) and ds.item_names[1] == "0001TP_000001"
    desc = describe_dataset(spec)["splits"]["train"]
    assert desc["pixels"] == 2 * 48 and desc["image_sizes"] == {"6x8": 2}


# ---- Pascal VOC and Cityscapes ----------------------------------------------------------------


def _palette_png(path: Path, index: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(index, mode="P")
    palette = np.random.default_rng(0).integers(0, 256, 768).astype(np.uint8)
    im.putpalette(palette.tolist())
    im.save(path)


def test_voc_layout(tmp_path):
    ids = {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003"]}
    rng = np.random.default_rng(3)
    masks = {}
    for split, names in ids.items():
        sets = tmp_path / "ImageSets" / "Segmentation"
        sets.mkdir(parents=True, exist_ok=True)
        (sets / f"{split}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            image = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
            _png(tmp_path / "JPEGImages" / f"{name}.jpg", image)
            mask = rng.integers(0, 21, (10, 12)).astype(np.uint8)
            mask[0] = 255
            _palette_png(tmp_path / "SegmentationClass" / f"{name}.png", mask)
            masks[name] = mask
    spec = f"voc:{tmp_path}"
    assert dataset_splits(spec) == ["train", "val"]
    ds = load_dataset(spec, "train")
    assert (ds.num_classes, ds.ignore_index, ds.class_names) == (21, 255, list(VOC_CLASSES))
    assert Image.open(tmp_path / "SegmentationClass" / "2007_000002.png").mode == "P"
    assert np.array_equal(ds[1][1].numpy(), masks["2007_000002"])  # palette index, not RGB
    assert ds[0][0].shape == (3, 10, 12)
    small = load_dataset(f"{spec}?size=5x6", "val")
    # nearest with the pixel-centre rule: output pixel i samples input row int((i + 0.5) * 2)
    assert np.array_equal(small[0][1].numpy(), masks["2007_000003"][1::2, 1::2])
    with pytest.raises(ValueError, match=r"no split 'test'; available splits: \['train', 'val'\]"):
        load_dataset(spec, "test")
    desc = describe_dataset(spec)
    assert desc["splits"]["train"]["ignored_pixels"] == 2 * 12
    assert sum(desc["splits"]["val"]["class_pixels"]) == 9 * 12


def test_cityscapes_layout(tmp_path):
    ids = np.array([[7, 26, 0, 33], [24, 11, 4, 23]], dtype=np.uint8)
    for split, city in (("train", "aachen"), ("val", "lindau")):
        stem = f"{city}_000000_000019"
        _png(tmp_path / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
             np.zeros((2, 4, 3), np.uint8))
        _png(tmp_path / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)
    spec = f"cityscapes:{tmp_path}"
    assert dataset_splits(spec) == ["train", "val"]
    ds = load_dataset(spec, "train")
    assert (ds.num_classes, ds.ignore_index, len(ds.class_names)) == (19, 255, 19)
    label = ds[0][1].numpy()
    # road=7->0, car=26->13, unlabeled=0->255, bicycle=33->18, person=24->11, building=11->2,
    # static=4->255, sky=23->10
    assert label.tolist() == [[0, 13, 255, 18], [11, 2, 255, 10]]
    assert ds.class_names[13] == "car" and ds.class_names[0] == "road"
    big = load_dataset(f"{spec}?size=4x8", "val")
    assert big[0][1].shape == (4, 8) and big[0][1][0, 2] == 13
    _png(tmp_path / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png",
         np.full((2, 4), 40, np.uint8))
    with pytest.raises(ValueError, match="value 40.*0..33"):
        load_dataset(spec, "val")[0]
    with pytest.raises(FileNotFoundError, match="gtFine"):
        load_dataset(f"cityscapes:{tmp_path / 'leftImg8bit'}")


# ---- specs ------------------------------------------------------------------------------------


def test_spec_errors():
    with pytest.raises(ValueError, match=r"unknown dataset kind 'shapez'.*did you mean 'shapes'"):
        load_dataset("shapez")
    with pytest.raises(ValueError) as err:
        load_dataset("camvd:/data")
    assert "did you mean 'camvid'" in str(err.value)
    assert all(k in str(err.value) for k in ("shapes", "npz", "folder", "voc", "cityscapes"))
    with pytest.raises(ValueError, match="prefix the path with its kind"):
        parse_spec("/some/where/data.npz")
    with pytest.raises(ValueError, match="malformed option 'n'"):
        parse_spec("shapes?n")
    with pytest.raises(ValueError, match="malformed option ''"):
        parse_spec("shapes?n=3&")
    with pytest.raises(ValueError, match="unknown option 'nn'.*did you mean 'n'"):
        parse_spec("shapes?nn=3")
    with pytest.raises(ValueError, match="option n='abc' is invalid"):
        load_dataset("shapes?n=abc")
    with pytest.raises(ValueError, match=r"size='3y4' is invalid; expected HxW"):
        load_dataset("shapes?size=3y4")
    with pytest.raises(ValueError, match="needs a path"):
        parse_spec("npz")
    with pytest.raises(ValueError, match="takes no path"):
        parse_spec("shapes:foo")
    with pytest.raises(ValueError, match="given twice"):
        parse_spec("shapes?n=1&n=2")
    spec = parse_spec(" CamVid:~/x?size=90x120 ")
    assert spec.kind == "camvid" and spec.path == Path.home() / "x"
    assert spec.options == {"size": "90x120"}


def test_describe_shapes():
    desc = describe_dataset("shapes?n=16")
    assert list(desc["splits"]) == ["train", "val", "test"]
    train = desc["splits"]["train"]
    _, labels = load_dataset("shapes?n=16").arrays()
    assert train["class_pixels"] == np.bincount(labels.ravel(), minlength=256)[:6].tolist()
    assert train["ignored_pixels"] == int((labels == 255).sum())
    assert train["image_sizes"] == {"64x64": 16} and train["images"] == 16
    assert sum(train["class_percent"]) + train["ignored_percent"] == pytest.approx(100)
    assert sum(train["class_percent_labelled"]) == pytest.approx(100)
    text = format_description(desc)
    assert "rare" in text and "ignore (255)" in text and "% of labelled pixels" in text


# ---- CamVid (shared data) ---------------------------------------------------------------------


def _readme_frequencies() -> dict[str, list[list[float]]]:
    """Per split: [% of all pixels, % of labelled pixels] per class, parsed from the README."""
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|(.+)\|$", (CAMVID / "README.md").read_text(), re.M)
    out: dict[str, list[list[float]]] = {s: [[], []] for s in ("train", "val", "test")}
    for idx, _name, rest in rows:
        cells = [c.strip() for c in rest.split("|")]
        if len(cells) != 6 or int(idx) > 10:
            continue
        for j, split in enumerate(("train", "val", "test")):
            out[split][0].append(float(cells[j]))
            out[split][1].append(float(cells[3 + j]))
    return out


@pytest.mark.skipif(not (CAMVID / "train.npz").is_file(), reason="shared CamVid data missing")
def test_camvid_frequencies_match_readme():
    reference = _readme_frequencies()
    desc = describe_dataset(f"camvid:{CAMVID}")
    assert desc["class_names"] == list(CAMVID_CLASSES) and desc["ignore_index"] == 11
    assert {s: v["images"] for s, v in desc["splits"].items()} == \
        {"train": 367, "val": 101, "test": 233}
    for split, (all_pix, labelled) in reference.items():
        assert len(all_pix) == 11
        stats = desc["splits"][split]
        assert stats["image_sizes"] == {"180x240": stats["images"]}
        np.testing.assert_allclose(stats["class_percent"], all_pix, atol=0.01)
        np.testing.assert_allclose(stats["class_percent_labelled"], labelled, atol=0.01)
    assert desc["splits"]["train"]["ignored_percent"] == pytest.approx(3.96, abs=0.01)


# ---- augmentation -----------------------------------------------------------------------------


def _batch(b: int = 4, h: int = 12, w: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(0, 5, (b, h // 4, w // 4), generator=torch.Generator().manual_seed(0))
    labels = labels.repeat_interleave(4, 1).repeat_interleave(4, 2)  # 4x4 blocks
    images = torch.stack([labels.float() / 10, torch.rand(b, h, w)], dim=1)
    return images, labels


def test_augment_flip_crop_alignment_and_determinism():
    images, labels = _batch()
    flip = Augment(crop=None, scale=None, flip=True, ignore_index=255)
    x1, y1 = flip(images, labels, torch.Generator().manual_seed(5))
    x2, y2 = flip(x1, y1, torch.Generator().manual_seed(5))  # same flips twice = identity
    assert torch.equal(x2, images) and torch.equal(y2, labels)
    flipped = [not torch.equal(y1[i], labels[i]) for i in range(4)]
    for i in range(4):
        assert torch.equal(y1[i], labels[i].flip(-1) if flipped[i] else labels[i])
    aug = Augment(crop=(8, 10), scale=None, flip=True, ignore_index=255)
    x, y = aug(images, labels, torch.Generator().manual_seed(1))
    assert x.shape == (4, 2, 8, 10) and y.shape == (4, 8, 10)
    assert torch.equal(x[:, 0] * 10, y.float())  # image and label stay aligned
    scaled = Augment(crop=(12, 16), scale=(0.75, 1.25), flip=True, ignore_index=255)
    x, y = scaled(images, labels, torch.Generator().manual_seed(2))
    # away from block edges (label equal to its 4 neighbours) the bilinear image matches the label
    p = torch.nn.functional.pad(y[:, None].float(), (1, 1, 1, 1), mode="replicate")[:, 0]
    centre = p[:, 1:-1, 1:-1]
    interior = (y != 255) & (centre == p[:, :-2, 1:-1]) & (centre == p[:, 2:, 1:-1]) \
        & (centre == p[:, 1:-1, :-2]) & (centre == p[:, 1:-1, 2:])
    assert interior.float().mean() > 0.3
    assert bool((torch.round(x[:, 0] * 10) == y.float())[interior].all())
    again = scaled(images, labels, torch.Generator().manual_seed(2))
    assert torch.equal(again[0], x) and torch.equal(again[1], y)
    other = scaled(images, labels, torch.Generator().manual_seed(3))
    assert not torch.equal(other[0], x)


def test_augment_padding_with_ignore_and_without():
    images, labels = _batch(2, 8, 8)
    pad = Augment(crop=(12, 10), scale=None, flip=False, ignore_index=255)
    x, y = pad(images, labels, torch.Generator().manual_seed(0))
    assert torch.equal(y[:, :8, :8], labels) and bool((y[:, 8:] == 255).all())
    assert bool((y[:, :, 8:] == 255).all()) and float(x[:, :, 8:].abs().max()) == 0.0
    shrink = Augment(crop=(8, 8), scale=(0.5, 0.5), flip=False, ignore_index=7)
    _, y = shrink(images, labels, torch.Generator().manual_seed(0))
    assert int((y == 7).sum()) == 2 * (64 - 16)
    no_ignore = Augment(crop=(8, 8), scale=(0.5, 0.75), flip=True, ignore_index=None)
    x, y = no_ignore(images, labels, torch.Generator().manual_seed(0))
    assert y.shape == (2, 8, 8) and int(y.max()) < 5 and int(y.min()) >= 0
    with pytest.raises(ValueError, match="crop must be"):
        Augment(crop=(0, 4), ignore_index=255)
    with pytest.raises(ValueError, match=r"images must be \[B,C,H,W\]"):
        pad(images[0], labels, None)


def test_normalize():
    x = torch.rand(2, 3, 4, 5)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = normalize(x, mean, std)
    for c in range(3):
        assert torch.allclose(out[:, c], (x[:, c] - mean[c]) / std[c])
    assert torch.allclose(normalize(x[0], mean, std), out[0])
    with pytest.raises(ValueError, match="C = len"):
        normalize(x, (0.1, 0.2), (1.0, 1.0))


@pytest.mark.parametrize("grey_first", [True, False])
def test_a_grey_and_rgb_image_mix_loads_in_either_order(tmp_path, grey_first):
    """One grey and one colour image: a 3-channel dataset (the grey one replicated) whichever
    file comes first (was: refused when the grey one sorted first; issue 26, item 13)."""
    grey, colour = ("a", "b") if grey_first else ("b", "a")
    _png(tmp_path / "images" / f"{grey}.png", np.full((4, 4), 128, np.uint8))
    _png(tmp_path / "images" / f"{colour}.png", np.full((4, 4, 3), 50, np.uint8))
    for stem in ("a", "b"):
        _png(tmp_path / "labels" / f"{stem}.png", np.ones((4, 4), np.uint8))
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.in_channels == 3
    images = {stem: ds[i][0] for i, stem in enumerate(("a", "b"))}
    assert images[grey].shape == (3, 4, 4) and torch.allclose(images[grey][0], images[grey][2])
    assert images[colour].shape == (3, 4, 4)
