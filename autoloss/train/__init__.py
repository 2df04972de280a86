"""Training: the networks (``models``), checkpoint files (``checkpoint``), the training loop
(``trainer.fit``), its optional TensorBoard writer (``tensorboard_log``) and the cheap proxy
training that scores a searched loss (``proxy``, ``proxy_features``).
"""

from autoloss.train.checkpoint import load_checkpoint, read_checkpoint, write_checkpoint
from autoloss.train.models import (
    DeepLabConfig,
    UNetConfig,
    build_model,
    config_from_dict,
    config_to_dict,
    model_from_name,
    predict,
)
from autoloss.train.proxy import Proxy, ProxyConfig, build_proxy
from autoloss.train.trainer import TrainConfig, TrainResult, fit

__all__ = ["DeepLabConfig", "Proxy", "ProxyConfig", "TrainConfig", "TrainResult", "UNetConfig",
           "build_model", "build_proxy", "config_from_dict", "config_to_dict", "fit",
           "load_checkpoint", "model_from_name", "predict", "read_checkpoint", "write_checkpoint"]
