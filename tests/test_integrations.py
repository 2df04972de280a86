"""autoloss.integrations without a framework: PipelineLoss (any loop, MONAI-style labels) and
MMSegLoss against mmseg's loss interface (``forward(cls_score, label, weight=None,
ignore_index=255, **kwargs)``, ``loss_name``, ``loss_weight``), as a decode head calls it.

MMSegmentation itself: ``mmsegmentation`` 1.2.2 installs without touching torch, but it imports
only beside ``mmcv`` 2.0-2.1, and its ``mmseg.models`` package (the decode heads) needs mmcv's
compiled ops (``mmcv._ext``), for which there is no wheel for torch 2.13 on CPU (and so does
``MODELS.build``, which imports ``mmseg.models`` first). So the heads are not run here; the last
test registers the adapter through ``custom_imports`` and builds it from a config with the class
mmseg's registry holds, where ``mmseg.registry`` imports (with ``mmcv-lite`` 2.1), and skips,
saying so, where it does not (CI: mmseg is not in the ``dev`` extra).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoloss.integrations import MMSegLoss, PipelineLoss
from autoloss.losses import load_loss


def _batch(seed: int = 0, n: int = 2, c: int = 4, low: int = 8, high: int = 32):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, low, low, generator=gen, requires_grad=True)
    labels = torch.randint(0, c, (n, high, high), generator=gen)
    labels[:, :3] = 255
    return logits, labels


def _up(logits: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)


# ---- PipelineLoss -----------------------------------------------------------------------------


def test_pipeline_loss_upsamples_and_takes_n1hw_labels():
    logits, labels = _batch()
    loss = PipelineLoss("asl-voc-miou", ignore_index=255)
    expected = load_loss("asl-voc-miou", ignore_index=255)(_up(logits, 32), labels)
    torch.testing.assert_close(loss(logits, labels[:, None]), expected)
    torch.testing.assert_close(loss(logits, labels), expected)
    loss(logits, labels).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_pipeline_loss_refuses_float_labels_and_a_module_with_another_ignore_index():
    logits, labels = _batch()
    with pytest.raises(ValueError, match=r"round\(\).long\(\)"):
        PipelineLoss("dice", ignore_index=255)(logits, labels[:, None].float())
    with pytest.raises(ValueError, match="ignore_index=None, but the data's is ignore_index=255"):
        PipelineLoss(load_loss("dice"), ignore_index=255)
    assert PipelineLoss(load_loss("dice", ignore_index=255), ignore_index=255)(logits, labels) > 0
    with pytest.raises(TypeError, match="loss must be a loss name"):
        PipelineLoss(3.5, ignore_index=255)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown loss 'asl-voc-mio'.*did you mean 'asl-voc-miou'"):
        PipelineLoss("asl-voc-mio", ignore_index=255)


def test_pipeline_loss_loads_an_exported_loss_file(tmp_path):
    from autoloss.losses import save_loss

    path = save_loss(load_loss("soft-miou"), tmp_path / "searched.yaml")
    logits, labels = _batch(1)
    torch.testing.assert_close(PipelineLoss(path, ignore_index=255)(logits, labels),
                               load_loss("soft-miou", ignore_index=255)(_up(logits, 32), labels))


# ---- MMSegLoss: mmseg's interface ---------------------------------------------------------------


def test_mmseg_loss_has_the_interface_a_decode_head_calls():
    loss = MMSegLoss("asl-voc-miou", loss_weight=0.4)
    assert loss.loss_name == "loss_autoloss" and loss.loss_name.startswith("loss_")
    logits, labels = _batch()
    # BaseDecodeHead.loss_by_feat: loss_decode(seg_logits, seg_label, weight=seg_weight,
    # ignore_index=self.ignore_index); here with logits at 1/4 of the labels
    value = loss(logits, labels, weight=None, ignore_index=255)
    expected = 0.4 * load_loss("asl-voc-miou", ignore_index=255)(_up(logits, 32), labels)
    torch.testing.assert_close(value, expected)
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    torch.testing.assert_close(loss(logits, labels[:, None]), expected)  # ignore_index=255 default
    assert loss(logits, labels, avg_factor=None, reduction_override="mean") == value


def test_mmseg_loss_builds_one_loss_per_ignore_index():
    loss = MMSegLoss("dice")
    logits, labels = _batch()
    loss(logits, labels, ignore_index=255)
    other = labels.masked_fill(labels == 255, 0)
    torch.testing.assert_close(loss(logits, other, ignore_index=None),
                               load_loss("dice")(_up(logits, 32), other))
    assert sorted(loss.losses) == ["255", "None"]
    with pytest.raises(ValueError, match=r"label values \[255\].*ignore_index=None"):
        loss(logits, labels, ignore_index=None)


def test_mmseg_loss_weights_keep_or_drop_pixels_and_refuse_the_rest():
    loss = MMSegLoss("lovasz_softmax")
    logits, labels = _batch(2)
    weight = torch.ones(labels.shape)
    weight[:, :, :10] = 0  # an OHEM sampler's 0/1 selection
    dropped = labels.masked_fill(weight == 0, 255)
    torch.testing.assert_close(loss(logits, labels, weight=weight),
                               load_loss("lovasz_softmax", ignore_index=255)(_up(logits, 32), dropped))
    torch.testing.assert_close(loss(logits, labels, weight=torch.ones(labels.shape)),
                               loss(logits, labels))
    with pytest.raises(ValueError, match=r"weights other than 0 and 1 \(got \[0.5\]\)"):
        loss(logits, labels, weight=torch.full(labels.shape, 0.5))
    with pytest.raises(ValueError, match="weight must be per pixel"):
        loss(logits, labels, weight=torch.ones(2, 32))
    with pytest.raises(ValueError, match="needs an ignore_index"):
        loss(logits, labels.clamp(max=3), weight=weight, ignore_index=None)


def test_mmseg_loss_errors_name_the_argument():
    with pytest.raises(ValueError, match="loss_name must be a str starting with 'loss_'.*'autoloss'"):
        MMSegLoss("dice", loss_name="autoloss")
    with pytest.raises(ValueError, match="loss_weight must be >= 0.0"):
        MMSegLoss("dice", loss_weight=-1.0)
    with pytest.raises(ValueError, match="unknown loss 'dcie'"):
        MMSegLoss("dcie")
    loss = MMSegLoss("dice")
    logits, labels = _batch()
    with pytest.raises(ValueError, match="unexpected keyword argument 'avg_factr'"):
        loss(logits, labels, avg_factr=3)
    with pytest.raises(ValueError, match="cannot honour avg_factor=7"):
        loss(logits, labels, avg_factor=7)
    with pytest.raises(ValueError, match="cannot honour reduction_override='sum'"):
        loss(logits, labels, reduction_override="sum")


def test_mmseg_loss_moves_with_the_head_and_sums_like_a_loss_list():
    """A head's ``loss_decode`` list: every entry called alike, values summed by mmseg."""
    head = nn.ModuleDict({"ce": nn.Identity(), "auto": MMSegLoss("asl-voc-miou",
                                                                 loss_name="loss_miou")})
    head.to(torch.float64)
    logits, labels = _batch()
    total = F.cross_entropy(_up(logits, 32), labels, ignore_index=255) + \
        head["auto"](logits.double(), labels, weight=None, ignore_index=255)
    total.backward()
    assert torch.isfinite(total) and logits.grad is not None


# ---- against mmseg's registry, where it imports -------------------------------------------------


def test_mmseg_builds_the_adapter_from_a_config_with_custom_imports():
    try:
        from mmengine.utils import import_modules_from_strings
        from mmseg.registry import MODELS
    except ImportError as err:
        pytest.skip(f"mmsegmentation cannot be imported here ({err}): it needs mmcv, whose ops "
                    f"have no wheel for torch 2.13 CPU; the adapter is tested against mmseg's "
                    f"interface above")
    # what mmengine does with cfg.custom_imports before building the model
    import_modules_from_strings(["autoloss.integrations.mmseg_plugin"], allow_failed_imports=False)
    # MODELS.build(cfg) would first import mmseg.models (mmcv's compiled ops): read the class
    # the config's type names from the registry's table instead, and build it from the config
    cfg = dict(type="AutolossLoss", loss="asl-voc-miou", loss_weight=0.5, loss_name="loss_miou")
    cls = MODELS.module_dict[cfg.pop("type")]
    assert cls is MMSegLoss
    loss = cls(**cfg)
    assert loss.loss_name == "loss_miou"
    logits, labels = _batch()
    torch.testing.assert_close(loss(logits, labels, weight=None, ignore_index=255),
                               0.5 * load_loss("asl-voc-miou", ignore_index=255)(_up(logits, 32),
                                                                                labels))
