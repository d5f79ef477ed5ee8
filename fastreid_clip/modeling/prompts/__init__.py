from .id_prompt import IDPromptLearner

__all__ = ["IDPromptLearner"]
