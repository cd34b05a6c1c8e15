"""The CPU kernels (lm/kernels/): fused attention against the blockwise reference, BLAS matmuls, the build."""
import ctypes
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import kernels
from lm.attention import prefix_lm_attention


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
  with pytest.raises(kernels.KernelBuildError, match="no-such-compiler.*lm.attention_impl=blockwise") as err:
    kernels.build("attention_cpu.cc")
  assert "\n" not in str(err.value)


def test_the_build_is_cached_and_complete(tmp_path, monkeypatch):
  monkeypatch.setenv("KINETO_CACHE", str(tmp_path))
  first = kernels.build("attention_cpu.cc")
  assert first.parent == tmp_path / "kernels" and first.stat().st_size > 0
  assert kernels.build("attention_cpu.cc") == first  # found, not rebuilt
  assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary left behind


def test_cpu_kernels_under_a_sharded_mesh_match_one_device():
  # XLA runs a custom call it cannot partition on gathered operands: slower, still exact.
  import configs
  import sharding
  from train.state import init_state, make_train_step

  def losses(shape, impls):
    cfg = configs.load("lm_tiny", ["train.seq_len=64", "train.batch_size=8", *impls])
    mesh = sharding.make_mesh(shape, jax.devices()[:int(np.prod(shape))])
    ts = init_state(cfg, mesh)
    step = make_train_step(cfg, mesh, ts)
    tokens = jax.random.randint(jax.random.key(0), (8, 65), 0, cfg.lm.vocab)
    prefix = jnp.zeros((8, 65), bool).at[:, :10].set(True)
    state, out = ts.state, []
    for _ in range(2):
      state, metrics = step(state, {"tokens": tokens, "input_mask": prefix, "loss_mask": ~prefix})
      out.append(float(metrics["loss"]))
    return out

  want = losses((1, 1, 1), [])
  got = losses((2, 4, 1), ["lm.attention_impl=cpu", "lm.matmul_impl=cpu"])
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_blas_matmul_equals_xla_with_either_operand_transposed(trans_a, trans_b):
  from lm.layers import dense
  keys = jax.random.split(jax.random.key(0), 2)
  a = jax.random.normal(keys[0], (70, 130) if trans_a else (130, 70))  # op(a): [130, 70]
  b = jax.random.normal(keys[1], (45, 70) if trans_b else (70, 45))    # op(b): [70, 45]
  got = jax.jit(lambda a, b: dense(a, b, "cpu", trans_a=trans_a, trans_b=trans_b))(a, b)
  want = (a.T if trans_a else a) @ (b.T if trans_b else b)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_blas_matmul_differentiates_like_xla():
  from lm.layers import dense
  x = jax.random.normal(jax.random.key(0), (3, 40, 4, 8))  # [B, T, N, K] against w [N, K, D]
  w = jax.random.normal(jax.random.key(1), (4, 8, 24))
  f = lambda impl: jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(dense(x, w, impl, contract=2))), (0, 1)))
  for got, want in zip(f("cpu")(x, w), f("xla")(x, w)):  # float32 sums in another order
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_blas_matmul_leaves_openblas_thread_count_alone_while_it_runs():
  # The count is process-wide: it is set once at registration, never from XLA's threads.
  from lm.kernels import matmul_cpu
  from lm.layers import dense
  x = jnp.ones((256, 64))
  dense(x, jnp.ones((64, 32)), "cpu").block_until_ready()  # registers: one thread
  get = matmul_cpu.openblas_function(("scipy_openblas_get_num_threads64_", "openblas_get_num_threads"))
  set_threads = matmul_cpu.openblas_function(matmul_cpu._SET_THREADS)
  set_threads.argtypes = [ctypes.c_int]
  assert get() == 1
  try:
    set_threads(2)  # as a user (or threadpoolctl) might, later
    y = jax.jit(lambda x, w: dense(x, w, "cpu"))(x, jnp.ones((64, 48)))
    np.testing.assert_allclose(y, 64.0)
    assert get() == 2
  finally:
    set_threads(1)
