from .load import load_model_weights, read_training_checkpoint

__all__ = ["load_model_weights", "read_training_checkpoint"]
