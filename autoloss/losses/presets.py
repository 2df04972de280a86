"""Named loss specs: the published Auto Seg-Loss searched losses and the PaddleSeg combinations.

``asl-voc-*``: the searched parameters of Auto Seg-Loss (Li et al., ICLR 2021), from the
reference repository's retrain configs (``ASL_configs/retrain/*_bezier_10k.py``, PASCAL VOC,
DeepLabv3+), with the reference's conventions: absolute Bezier control points, classes averaged
over **all** classes for mIoU / mAcc / BIoU, BIoU with ``drop_bg=True, tol=5``, BF1 with
``tol=5`` over classes with ground-truth edges, BF1's predicted-edge dilation in float32, and
``ignore_index=255`` (VOC). Any option can be overridden: ``load_loss("asl-voc-biou", tol=2)``.
"""

from __future__ import annotations

from typing import Any

from autoloss.losses.rmi import RMI_PRESETS

__all__ = ["PRESETS"]

_REGION_THETA = {  # (inter, union) absolute control points, 2 quadratic pieces each
    "miou": ([0.00056972844, 0.64372045, 0.338589169, 0.70554336, 0.625281252, 0.779551927],
             [0.69037557, 0.01306289, 0.834170515, 0.962431815, 0.942998269, 0.980038125]),
    "fwiou": ([0.000365390355, 0.984171689, 0.969491959, 0.992340326, 0.988328516, 0.995552719],
              [0.354609758, 0.267221928, 0.560551465, 0.435290039, 0.565432191, 0.601448298]),
}
_ACC_THETA = [0.021453928, 0.73905742, 0.41163361, 0.79865617, 0.91986191, 0.95041156]
_BF1_THETA = [0.8113003373146057, 0.8526162505149841, 0.17164576053619385, 0.03164796531200409,
              0.20997394621372223, 0.44903290271759033, 0.07847517728805542, 0.8753038048744202]


def _bezier(points: list[float]) -> dict[str, Any]:
    return {"kind": "bezier", "points": list(points)}


def _asl(metric: str, curves: dict[str, list[float]], *, classes: str, tol: int = 5,
         drop_bg: bool = False, float32_dilation: bool = False) -> dict[str, Any]:
    return {
        "name": "surrogate",
        "metric": metric,
        "ignore_index": 255,
        "tol": tol,
        "drop_bg": drop_bg,
        "classes": classes,
        "eps": 1e-8,
        "float32_dilation": float32_dilation,
        "curves": {name: _bezier(points) for name, points in curves.items()},
        "provenance": {
            "source": "Auto Seg-Loss (Li et al., ICLR 2021), published searched parameters",
            "config": f"ASL_configs/retrain/{metric}_bezier_10k.py (PASCAL VOC 2012)",
        },
    }


PRESETS: dict[str, dict[str, Any]] = {
    "asl-voc-miou": _asl("miou", dict(zip(("inter", "union"), _REGION_THETA["miou"])),
                         classes="all"),
    "asl-voc-fwiou": _asl("fwiou", dict(zip(("inter", "union"), _REGION_THETA["fwiou"])),
                          classes="all"),
    "asl-voc-macc": _asl("macc", {"acc": _ACC_THETA}, classes="all"),
    "asl-voc-gacc": _asl("gacc", {"acc": _ACC_THETA}, classes="all"),
    "asl-voc-biou": _asl("biou", dict(zip(("inter", "union"), _REGION_THETA["fwiou"])),
                         classes="all", drop_bg=True),
    "asl-voc-bf1": _asl(
        "bf1",
        dict(zip(("edge_and_x", "edge_and_eroded", "edge_or_x", "edge_or_eroded"),
                 (_BF1_THETA[0:2], _BF1_THETA[2:4], _BF1_THETA[4:6], _BF1_THETA[6:8]))),
        classes="present", float32_dilation=True,
    ),
    # PaddleSeg recipes: Lovasz-Softmax 0.2 + softmax CE 0.8; Lovasz hinge 0.5 + BCE 0.5.
    "paddleseg-lovasz-softmax-ce": {
        "combine": [{"name": "lovasz_softmax", "weight": 0.2},
                    {"name": "cross_entropy", "weight": 0.8}],
    },
    "paddleseg-lovasz-hinge-bce": {
        "combine": [{"name": "lovasz_hinge", "weight": 0.5},
                    {"name": "binary_cross_entropy", "weight": 0.5}],
    },
    # The JDT authors' recommended mix (Wang et al., NeurIPS 2023): 0.25 CE + 0.75 Jaccard metric.
    "jdt-ce": {
        "combine": [{"name": "cross_entropy", "weight": 0.25},
                    {"name": "jaccard_metric", "weight": 0.75}],
    },
    # RMI with the reference's training settings (parser_params.py: average pooling 2x2, stride 2;
    # lambda 0.5 mixes in its binary cross-entropy term).
    "rmi-train": {"name": "rmi", **RMI_PRESETS["train_defaults"]},
}

# The plain soft metrics: every curve the identity, classes present in the batch.
for _metric in ("miou", "fwiou", "macc", "gacc", "mdice", "biou", "bf1", "miou_image"):
    PRESETS[f"soft-{_metric}"] = {"name": "surrogate", "metric": _metric}
