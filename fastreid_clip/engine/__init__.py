from .hooks import EvalBeforeTrain, RankVisualization, StageCheckpointer
from .trainer import AutocastTrainLoop, ClipTrainer

__all__ = ["EvalBeforeTrain", "RankVisualization", "StageCheckpointer", "AutocastTrainLoop", "ClipTrainer"]
