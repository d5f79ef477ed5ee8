from .convert import convert_clipreid_state_dict, detect_clipreid_layout
from .load import load_model_weights, read_training_checkpoint

__all__ = ["convert_clipreid_state_dict", "detect_clipreid_layout", "load_model_weights", "read_training_checkpoint"]
