"""Segmentation datasets named by one spec string, and training augmentation.

    >>> from autoloss.data import load_dataset
    >>> train = load_dataset("shapes", "train", subset=8)
    >>> image, label = train[0]          # float32 [3, 64, 64] in [0, 1], int64 [64, 64]
    >>> (train.num_classes, train.ignore_index, tuple(image.shape))
    (6, 255, (3, 64, 64))

Specs: ``shapes`` (embedded, no files), ``npz:PATH``, ``folder:PATH``, ``camvid:PATH``,
``voc:PATH``, ``cityscapes:PATH``, each with optional ``?key=value&...`` options
(``autoloss.data.spec`` lists them).
"""

from autoloss.data.augment import Augment, normalize, to_tensors
from autoloss.data.dataset import SegmentationDataset, channel_stats
from autoloss.data.describe import describe_dataset, format_description
from autoloss.data.embedded import SHAPES_CLASSES, generate_shapes
from autoloss.data.layouts import (
    CAMVID_CLASSES,
    CITYSCAPES_CLASSES,
    CITYSCAPES_TRAIN_IDS,
    VOC_CLASSES,
)
from autoloss.data.spec import (
    DATASET_KINDS,
    DatasetSpec,
    data_slug,
    dataset_splits,
    load_dataset,
    parse_spec,
    split_hint,
)

__all__ = [
    "Augment",
    "CAMVID_CLASSES",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_TRAIN_IDS",
    "DATASET_KINDS",
    "DatasetSpec",
    "data_slug",
    "SHAPES_CLASSES",
    "SegmentationDataset",
    "VOC_CLASSES",
    "channel_stats",
    "dataset_splits",
    "describe_dataset",
    "format_description",
    "generate_shapes",
    "load_dataset",
    "normalize",
    "parse_spec",
    "split_hint",
    "to_tensors",
]
