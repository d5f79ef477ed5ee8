from .hooks import EvalBeforeTrain, RankVisualization, StageCheckpointer, StageJSONWriter, StagePeriodicWriter
from .run_setup import default_setup, eval_output_dir
from .trainer import AutocastTrainLoop, ClipTrainer

__all__ = ["EvalBeforeTrain", "RankVisualization", "StageCheckpointer", "StageJSONWriter", "StagePeriodicWriter",
           "default_setup", "eval_output_dir", "AutocastTrainLoop", "ClipTrainer"]
