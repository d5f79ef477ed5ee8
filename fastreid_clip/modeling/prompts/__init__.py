from .composed import ComposedPrompt
from .domain_prompt import DomainPromptLearner
from .id_prompt import IDPromptLearner

__all__ = ["IDPromptLearner", "ComposedPrompt", "DomainPromptLearner"]
