"""Registers :class:`~autoloss.integrations.mmseg.MMSegLoss` in MMSegmentation's model
registry as ``AutolossLoss``: name this module in a config's ``custom_imports`` (mmseg's way to
load a plug-in; it is the only autoloss module that registers anything on import)::

    custom_imports = dict(imports=["autoloss.integrations.mmseg_plugin"],
                          allow_failed_imports=False)
    model = dict(decode_head=dict(loss_decode=dict(type="AutolossLoss",
                                                   loss="searched_loss.yaml")))
"""

from __future__ import annotations

from autoloss.errors import MissingDependencyError
from autoloss.integrations.mmseg import MMSegLoss

try:
    from mmseg.registry import MODELS
except ImportError as err:
    raise MissingDependencyError(
        f"autoloss.integrations.mmseg_plugin registers AutolossLoss in MMSegmentation, which "
        f"cannot be imported here ({err}); install mmsegmentation (with mmcv), or use "
        f"autoloss.integrations.MMSegLoss directly") from err

__all__ = ["MMSegLoss"]

MODELS.register_module(name="AutolossLoss", module=MMSegLoss)
