"""The fused CPU attention kernel (lm/kernels/attention_cpu.cc) against the blockwise reference."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.attention import prefix_lm_attention
from lm.kernels import attention_cpu


def _inputs(b, t, n, g, k, seed=0):
  keys = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(keys[0], (b, t, n, k))
  kv = [jax.random.normal(keys[i], (b, t, g, k)) for i in (1, 2)]
  cot = jax.random.normal(keys[3], (b, t, n, k))
  segs = np.ones((b, t), np.int32)
  prefix = np.zeros((b, t), bool)
  prefix[0, :min(90, t)] = True  # a prefix longer than one 64-query tile
  if b > 1:  # row 1: a packed second sequence with its own prefix, then padding
    segs[1, t // 3:] = 2
    segs[1, t - 7:] = 0
    prefix[1, :5] = True
    prefix[1, t // 3:t // 3 + 70] = True
  return q, kv, cot, jnp.asarray(segs), jnp.asarray(prefix)


@functools.partial(jax.jit, static_argnums=(0,))
def _value_and_grads(impl, q, k, v, cot, segs, prefix):
  f = lambda q, k, v: prefix_lm_attention(q, k, v, segs, prefix, block=64, impl=impl)
  out, vjp = jax.vjp(f, q, k, v)
  return (out, *vjp(cot))


@pytest.mark.parametrize("shape", [(2, 200, 4, 2, 32), (2, 130, 2, 1, 16), (1, 64, 2, 2, 64)])
def test_cpu_kernel_equals_blockwise_in_value_and_gradient(shape):
  # Several 64-query tiles, ragged ends, grouped-query heads, head dims that are not a
  # multiple of the kernel's 32-wide tiles, packed sequences, prefixes crossing tiles.
  q, (k, v), cot, segs, prefix = _inputs(*shape)
  want = _value_and_grads("blockwise", q, k, v, cot, segs, prefix)
  got = _value_and_grads("cpu", q, k, v, cot, segs, prefix)
  for name, w, g in zip(("out", "dq", "dk", "dv"), want, got):
    np.testing.assert_allclose(g, w, atol=2e-5, rtol=1e-5, err_msg=name)
  if shape[0] > 1:  # padding rows see nothing: their output is zero
    np.testing.assert_array_equal(np.asarray(got[0])[1, -7:], 0)


def test_cpu_kernel_in_bfloat16_matches_float32():
  q, (k, v), cot, segs, prefix = _inputs(2, 96, 2, 2, 32)
  want = _value_and_grads("cpu", q, k, v, cot, segs, prefix)
  bf = lambda x: x.astype(jnp.bfloat16)
  got = _value_and_grads("cpu", bf(q), bf(k), bf(v), bf(cot), segs, prefix)
  for w, g in zip(want, got):
    assert g.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(g, np.float32), w, atol=0.06, rtol=0.05)


def test_a_missing_compiler_is_one_line_naming_the_fix(monkeypatch):
  monkeypatch.setenv("CXX", "no-such-compiler")
  with pytest.raises(attention_cpu.KernelBuildError, match="no-such-compiler.*lm.attention_impl=blockwise") as err:
    attention_cpu.build()
  assert "\n" not in str(err.value)


def test_the_build_is_cached_and_complete(tmp_path, monkeypatch):
  monkeypatch.setenv("KINETO_CACHE", str(tmp_path))
  first = attention_cpu.build()
  assert first.parent == tmp_path / "kernels" and first.stat().st_size > 0
  assert attention_cpu.build() == first  # found, not rebuilt
  assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary left behind
