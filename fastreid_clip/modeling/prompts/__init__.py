from .composed import ComposedPrompt
from .id_prompt import IDPromptLearner

__all__ = ["IDPromptLearner", "ComposedPrompt"]
