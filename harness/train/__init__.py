"""The thin QLoRA trainer: data formatting, loss masking, packing, the loop, the registry record."""

from .config import TrainConfig
from .loop import StepEvent, TrainingDiverged, TrainResult, train

__all__ = ["StepEvent", "TrainConfig", "TrainResult", "TrainingDiverged", "train"]
