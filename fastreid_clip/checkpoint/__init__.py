from .checkpointer import RESUME_KEYS, ClipCheckpointer
from .convert import convert_clipreid_state_dict, detect_clipreid_layout
from .files import CheckpointError, atomic_torch_save, atomic_write_text, content_digest, read_checkpoint
from .load import fill_shapes_from_checkpoint, load_model_weights, read_training_checkpoint

__all__ = ["fill_shapes_from_checkpoint", "ClipCheckpointer", "RESUME_KEYS", "CheckpointError", "atomic_torch_save", "atomic_write_text",
           "content_digest", "read_checkpoint", "convert_clipreid_state_dict", "detect_clipreid_layout",
           "load_model_weights", "read_training_checkpoint"]
