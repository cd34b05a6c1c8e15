"""Training pieces: the optimizer's weight-decay mask and the loss masking rules."""
import jax
import jax.numpy as jnp
from flax import nnx

import configs
from lm import Transformer, next_token_loss
from train.optimizer import decay_mask


def test_norm_scales_are_not_decayed_and_weights_are():
  model = Transformer(configs.load("lm_tiny").lm, rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  mask = dict((jax.tree_util.keystr(path), decays)
              for path, decays in jax.tree_util.tree_flatten_with_path(decay_mask(params))[0])
  assert mask and all(decays == ("scale" not in name) for name, decays in mask.items()), mask


def test_loss_never_counts_prefix_targets_or_padding():
  model = Transformer(configs.load("lm_tiny").lm, rngs=nnx.Rngs(0))
  tokens = jax.random.randint(jax.random.key(0), (1, 12), 0, 512)
  prefix = jnp.zeros((1, 12), bool).at[:, :4].set(True)
  segs = jnp.array([[1] * 9 + [0] * 3])
  everything = jnp.ones((1, 12), bool)  # a careless loss mask: prefix and padding included
  _, metrics = next_token_loss(model, tokens, prefix, everything, segs)
  # Targets 1..11: 1-3 are inside the prefix with their query, 9-11 are padding.
  assert float(metrics["tokens"]) == 5
