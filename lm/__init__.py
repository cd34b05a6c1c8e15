"""The language model: the unified vocabulary, the prefix-LM transformer, its attention,
loss and KV cache."""
from lm.loss import fused_cross_entropy, next_token_loss
from lm.model import KVCache, Transformer
from lm.vocab import SPECIAL_TOKENS, TASKS, Vocabulary

__all__ = ["KVCache", "Transformer", "fused_cross_entropy", "next_token_loss", "SPECIAL_TOKENS",
           "TASKS", "Vocabulary"]
