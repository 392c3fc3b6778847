from pipeline.core.models.base import MeasuredModel
from pipeline.core.models.cnn import CNN
from pipeline.core.models.group_net import GroupNet

__all__ = ["CNN", "GroupNet", "MeasuredModel"]
