from .hooks import EvalBeforeTrain, RankVisualization
from .trainer import AutocastTrainLoop, ClipTrainer

__all__ = ["EvalBeforeTrain", "RankVisualization", "AutocastTrainLoop", "ClipTrainer"]
