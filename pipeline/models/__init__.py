from .base import MeasuredModel
from .cnn import CNN
from .group_net import GroupNet

__all__ = ["CNN", "GroupNet", "MeasuredModel"]
