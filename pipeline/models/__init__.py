from .base import MeasuredModel
from .cnn import CNN, CONFIGS
from .group_net import GroupNet

__all__ = ["CNN", "CONFIGS", "GroupNet", "MeasuredModel"]
