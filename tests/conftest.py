"""The suite's shared set-up.

- Fakes an 8-device CPU host before JAX starts, so one run tests 1- and 8-device meshes.
- JAX's persistent compilation cache in `.cache/jax` (git-ignored; `.cache/jax-gw0` etc. per
  pytest-xdist worker), for this process and the `kineto` subprocesses the tests start: a second
  `make test` loads the compiled programs.
  Sharing one directory across device counts is safe: the cache key hashes the program, the
  XLA flags (`--xla_force_host_platform_device_count` included), the compile options with
  the device assignment, and the devices, so a 1-device program never answers an 8-device one.
- The shared chain, built once per test session and only when a test asks for it:
  `atari32` (demo clips) -> `caption_model` (SentencePiece) -> `random_tokenizer(seed)` ->
  `atari32_tokens` (token shards) -> `tiny_lm_run` (LM checkpoint); `atari32_sr_tokens` (the
  same clips with low-res pairs, for the SR stage).
"""
from __future__ import annotations

import faulthandler
import math
import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# libtpu (the AOT tests) must not be refused by another process on this host holding its lock.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
ROOT = pathlib.Path(__file__).resolve().parents[1]
_SHARED_CACHE = str(ROOT / ".cache" / "jax")
# `make test` runs two pytest-xdist workers; each keeps its own cache (.cache/jax-gw0, ...), as
# JAX writes a cache file in place and one worker could load the other's half-written entry.
# (A worker inherits the controller's environment, so the shared default is replaced, not kept.)
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER and os.environ.get("JAX_COMPILATION_CACHE_DIR", _SHARED_CACHE) == _SHARED_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = f"{_SHARED_CACHE}-{_WORKER}"
CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _SHARED_CACHE)
# Subprocesses read these at import; "0.1" s keeps the many trivial programs out of the cache.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_compilation_cache_dir", CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                  int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))

# A test's whole run (set-up, call, tear-down) past this many seconds ends the suite.
WATCHDOG_SECONDS = 1500


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
  """Arms faulthandler's watchdog around each test: past WATCHDOG_SECONDS it writes every
  thread's stack to the real stderr and exits. pytest-timeout's timer (pyproject.toml) is a
  Python thread, so a test stuck in C code that holds the GIL never lets it run. This watchdog
  is a C thread and needs no GIL (though, like any thread, it needs the CPU: see below)."""
  faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True, file=sys.__stderr__)
  try:
    yield
  finally:
    faulthandler.cancel_dump_traceback_later()
    # A test that left this process at a real-time priority (SVT-AV1 does that to its caller when
    # run as root: kineto/eval/codecs.py) would hand it to every process the next tests start;
    # at SCHED_FIFO two busy-waiting gloo processes starve the whole machine. Say so and undo it.
    if hasattr(os, "sched_getscheduler") and os.sched_getscheduler(0) != os.SCHED_OTHER:
      print(f"\nconftest: {item.nodeid} left the test process at scheduling policy "
            f"{os.sched_getscheduler(0)}; reset to SCHED_OTHER", file=sys.__stderr__, flush=True)
      os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


# vidtok_tiny at test size: no perceptual or GAN loss, batch 2 over fsdp, 5 frames.
TOKENIZER_FAST = ["train.perceptual_weight=0", "train.gan_weight=0", "train.batch_size=2", "train.frames=5",
                  "mesh.fsdp=2", "mesh.tensor=-1"]  # 8 fake devices: batch 2 over fsdp, tensor replicates
TOKEN_SHARD = 2  # small shards, so the 6 + 4 atari32 clips make 3 + 2 of them


def write_tokenizer(workdir: pathlib.Path, seed: int) -> pathlib.Path:
  """A vidtok_tiny checkpoint as the trainer saves it (the Checkpointer with the whole train
  state, EMA included), holding seeded random weights: even one training step compiles for over
  a minute on two shared CPU cores, and the trainer has its own tests (test_tokenizer_train.py)."""
  import jax.numpy as jnp
  import numpy as np

  import configs
  import sharding
  from train import tokenizer_step
  from train.checkpoint import Checkpointer

  cfg = configs.load("vidtok_tiny", TOKENIZER_FAST + [f"train.seed={seed}"])
  ts = tokenizer_step.abstract_state(cfg, sharding.make_mesh((1, 1, 1), jax.devices()[:1]))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
      return jnp.zeros(leaf.shape, leaf.dtype)  # step counters
    if len(leaf.shape) >= 2:  # kernels at the initializers' fan-in scale
      return jnp.asarray(rng.normal(size=leaf.shape) / math.sqrt(math.prod(leaf.shape[:-1])), leaf.dtype)
    is_scale = "scale" in jax.tree_util.keystr(path)
    return jnp.full(leaf.shape, 1.0 if is_scale else 0.0, leaf.dtype)

  ckpt = Checkpointer(workdir / "checkpoints", cfg)
  ckpt.save(1, jax.tree_util.tree_map_with_path(fill, ts.state), force=True)
  ckpt.wait()
  ckpt.close()
  return workdir


def write_lm(workdir: pathlib.Path, tokens_dir: pathlib.Path, *extra: str) -> pathlib.Path:
  """An lm_tiny checkpoint over `tokens_dir` as the trainer saves it, from seeded initial weights."""
  import configs
  import sharding
  from train.checkpoint import Checkpointer
  from train.state import init_state

  cfg = configs.load("lm_tiny", ["data.source=tokens", f"data.tokens_dir={tokens_dir}", "lm.vocab=704",
                                 "lm.max_len=256", "lm.attention_block=64", *extra])
  ts = init_state(cfg, sharding.make_mesh((1, 1, 1), jax.devices()[:1]), seed=0)
  ckpt = Checkpointer(workdir / "checkpoints", cfg)
  ckpt.save(3, ts.state, force=True)
  ckpt.wait()
  ckpt.close()
  return workdir


# --- the shared chain: built once per session, read-only for the tests ----------------------

@pytest.fixture(scope="session")
def chain_dir(tmp_path_factory) -> pathlib.Path:
  return tmp_path_factory.mktemp("chain")


@pytest.fixture(scope="session")
def atari32(chain_dir) -> pathlib.Path:
  """Demo clips: Pong and Freeway at 32x32, 17 frames; 6 train (one episode), 4 validation."""
  from train.data import demo
  out = chain_dir / "atari32"
  demo.build_demo(out, size=32, games=("Pong", "Freeway"), train_episodes=1, train_clips=3,
                  val_clips=2, videos=False, progress=False)
  return out


@pytest.fixture(scope="session")
def caption_model(chain_dir) -> pathlib.Path:
  """A 24-piece BPE SentencePiece model of the demo's game captions (`captions.model`)."""
  from lm.text import train_sentencepiece
  from train.data import demo
  corpus = chain_dir / "captions.txt"
  corpus.write_text("\n".join(list(demo.GAMES.values()) * 20) + "\n")
  return train_sentencepiece(corpus, 24, chain_dir / "captions", model_type="bpe")


@pytest.fixture(scope="session")
def random_tokenizer(chain_dir):
  """`random_tokenizer(seed)`: the workdir of a seeded random vidtok_tiny (see write_tokenizer)."""
  made: dict[int, pathlib.Path] = {}

  def get(seed: int = 0) -> pathlib.Path:
    if seed not in made:
      made[seed] = write_tokenizer(chain_dir / f"tok_{seed}", seed)
    return made[seed]
  return get


@pytest.fixture(scope="session")
def atari32_tokens(atari32, caption_model, random_tokenizer):
  """(out, summary): an uninterrupted `tokenize_dataset` of atari32 with tokenizer seed 0 on the
  8 fake devices (batch 8), shards of TOKEN_SHARD clips, captions as pieces."""
  from train.data.tokenize import tokenize_dataset
  out = atari32.parent / "tokens"
  summary = tokenize_dataset(random_tokenizer(0), atari32, out, batch=8, shard_size=TOKEN_SHARD,
                             text_model=caption_model, progress=False)
  return out, summary


@pytest.fixture(scope="session")
def atari32_sr_tokens(atari32, caption_model, random_tokenizer) -> pathlib.Path:
  """`tokenize_dataset(..., lowres=2)` of atari32: 5x4x4 codes and their 5x2x2 low-res pairs
  (the clips downsampled to 16x16), for the SR stage (configs/sr_tiny.py)."""
  from train.data.tokenize import tokenize_dataset
  out = atari32.parent / "sr_tokens"
  tokenize_dataset(random_tokenizer(0), atari32, out, batch=8, shard_size=8, text_model=caption_model,
                   lowres=2, progress=False)
  return out


@pytest.fixture(scope="session")
def lm_checkpoint():
  """`lm_checkpoint(workdir, tokens_dir, *overrides)`: see write_lm."""
  return write_lm


@pytest.fixture(scope="session")
def tiny_lm_run(chain_dir, atari32, random_tokenizer, atari32_tokens) -> dict:
  """The whole chain: clips -> tokenizer -> token shards with captions -> an LM checkpoint (step 3)."""
  tokens, _ = atari32_tokens
  lm = write_lm(chain_dir / "lm", tokens, "vocab.video_bits=8")
  return {"root": chain_dir, "lm": lm, "tokens": tokens, "tok": random_tokenizer(0), "clips": atari32}


# --- the command line in a subprocess, and preemption -----------------------------------------

# For a subprocess a test may SIGKILL (or starve of disk): it reads the shared compilation cache
# but writes nothing to it. JAX writes a cache file in place, so a kill mid-write leaves a torn
# entry that aborts whichever process loads it next (seen in a full run: a later test's training).
NO_CACHE_WRITES = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "1e9"}


def kineto_env(devices: int = 8) -> dict:
  """The environment of a `python -m kineto` subprocess: CPU, `devices` fake devices. Set the
  way this process sets them (`jax_num_cpu_devices`, not XLA_FLAGS, which the cache key hashes),
  so with 8 its programs are the ones this process compiled and the persistent cache holds."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), JAX_NUM_CPU_DEVICES=str(devices))
  env.pop("XLA_FLAGS", None)
  return env


def run_kineto(args: list[str], *, devices: int = 8, timeout: float = 900) -> tuple[int, str]:
  """(exit status, stdout + stderr) of `python -m kineto *args`."""
  import subprocess
  import sys
  done = subprocess.run([sys.executable, "-m", "kineto", *map(str, args)], cwd=ROOT, env=kineto_env(devices),
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        timeout=timeout)
  return done.returncode, done.stdout


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now (for a coordinator)."""
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_together(commands: list[list[str]], logs: pathlib.Path, *, env: dict | list[dict],
                 timeout: float = 600) -> list[tuple[int, str]]:
  """Starts `commands` side by side (the processes of one distributed job; `env`: theirs, or one
  each) and returns each one's (exit status, stdout + stderr). Output goes to files under `logs`,
  not pipes: a process blocked on a full pipe that no one reads would stall its peers at their
  next collective. Past `timeout` seconds, all are killed (status -9, the log says so): one
  stuck process cannot wedge the suite."""
  import subprocess
  import time
  logs.mkdir(parents=True, exist_ok=True)
  files = [open(logs / f"process-{i}.log", "w") for i in range(len(commands))]
  envs = env if isinstance(env, list) else [env] * len(commands)
  procs = [subprocess.Popen(cmd, cwd=ROOT, env=e, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
           for cmd, e, f in zip(commands, envs, files)]
  deadline = time.time() + timeout
  try:
    for p in procs:
      p.wait(timeout=max(1.0, deadline - time.time()))
  except subprocess.TimeoutExpired:
    for p, f in zip(procs, files):
      if p.poll() is None:
        p.kill()
        print(f"\nrun_together: killed after {timeout:.0f} s", file=f, flush=True)
  finally:
    for p, f in zip(procs, files):
      p.wait()
      f.close()
  return [(p.returncode, (logs / f"process-{i}.log").read_text()) for i, p in enumerate(procs)]


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  """The complete checkpoints in workdir/checkpoints (orbax renames a finished save to its step)."""
  found = (workdir / "checkpoints").glob("*")
  return sorted(int(p.name) for p in found if p.name.isdigit())


def sigterm_after_first_checkpoint(args: list[str], workdir: pathlib.Path, *, devices: int = 8,
                                   timeout: float = 900) -> tuple[int, str, int | None]:
  """Runs `python -m kineto *args`, sends it SIGTERM (a scheduler's preemption notice) as soon as
  the first checkpoint in `workdir` is complete, and returns (exit status, its output, the first
  checkpoint's step; None when the run ended before one appeared)."""
  import signal
  import subprocess
  import sys
  import time
  log = workdir.parent / f"{workdir.name}.log"
  workdir.parent.mkdir(parents=True, exist_ok=True)
  with open(log, "w") as out:
    proc = subprocess.Popen([sys.executable, "-m", "kineto", *map(str, args)], cwd=ROOT,
                            env=kineto_env(devices), stdout=out, stderr=subprocess.STDOUT, text=True)
    first, deadline = None, time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
      steps = checkpoint_steps(workdir)
      if steps:
        first = steps[0]
        proc.send_signal(signal.SIGTERM)
        break
      time.sleep(0.01)
    try:
      code = proc.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      proc.kill()
      code = proc.wait()
  return code, log.read_text(), first


SAVED = r"kineto: SIGTERM: saved step (\d+) to (\S+); run the same command to resume\."


@pytest.fixture(scope="session")
def kineto_cli():
  """`kineto_cli.run(args)`, `kineto_cli.sigterm(args, workdir)`, `kineto_cli.saved` (the
  regex of the preempted trainer's last line) and `kineto_cli.checkpoints(workdir)`: see above."""
  import types
  return types.SimpleNamespace(run=run_kineto, sigterm=sigterm_after_first_checkpoint, saved=SAVED,
                               checkpoints=checkpoint_steps)
