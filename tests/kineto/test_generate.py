"""Generation end to end: `Generator.load` resolves a run from its LM checkpoint, each task
gives frames of the clip's shape, long video continues, `kineto generate` writes a
readable MP4 / GIF / JSON, the sampler compiles once per shape, bad input exits with 2.

The LM checkpoint is written the way the trainer writes it (Checkpointer, whole train
state, config with data.tokens_dir) from seeded initial weights, and the tokenizer holds
seeded random weights (tests/conftest.py): the tests check the wiring and shapes,
not sample quality, and compiling a training step would cost minutes on shared cores.
"""
from __future__ import annotations

import json
import shutil

import av
import numpy as np
import pytest
from PIL import Image

from kineto import media
from kineto.cli import main
from kineto.generate import GenerateError, Generator, choose_task, token_mask
from lm import sampling


@pytest.fixture(scope="module")
def run(tiny_lm_run):
  """Demo clips (32x32, 17 frames) -> tokenizer -> token shards with captions -> LM checkpoint:
  the session's shared chain (tests/conftest.py)."""
  return tiny_lm_run


@pytest.fixture(scope="module")
def gen(run):
  return Generator.load(run["lm"], progress=False)


def frames_u8(n, seed=0, size=32):
  return (np.random.default_rng(seed).random((n, size, size, 3)) * 255).astype(np.uint8)


def test_load_resolves_the_run(gen, run):
  assert (gen.spec.frames, gen.spec.height, gen.spec.width) == (17, 32, 32)
  assert gen.spec.video_shape == (5, 4, 4)
  assert gen.checkpoints["lm_step"] == 3 and gen.checkpoints["tokenizer"] == str(run["tok"].absolute())
  assert gen.checkpoints["text_model"].endswith("captions.model") and gen.audio_codec is None
  assert gen.vocab.cfg.video_bits == gen.tokenizer.cfg.bits == 8


def test_task_is_chosen_from_the_inputs():
  v, m = np.zeros((17, 32, 32, 3)), np.zeros((17, 32, 32), bool)
  assert choose_task(prompt="x") == "t2v" and choose_task() == "unconditional"
  assert choose_task(image=v[0]) == "i2v" and choose_task(video=v) == "continuation"
  assert choose_task(video=v, mask="box:8,24,8,24") == "inpaint"
  assert choose_task(video=v, mask="border:8") == "outpaint"
  border = m.copy()
  border[:, :, :8] = True  # kept: the right three quarters, one rectangle
  assert choose_task(video=v, mask=border) == "outpaint"
  hole = m.copy()
  hole[:, 8:16, 8:16] = True
  assert choose_task(video=v, mask=hole) == "inpaint"
  assert choose_task(audio=np.zeros(10)) == "a2v"


def test_t2v_i2v_inpaint_outpaint_give_clips(gen):
  out = gen.generate(prompt="Pong", num_samples=2, seed=1)
  assert out["task"] == "t2v" and out["video"].shape == (2, 17, 32, 32, 3) and out["video"].dtype == np.uint8
  assert out["codes"]["video"].shape == (2, 5, 4, 4) and out["audio"] is None
  assert out["tokens_per_second"] > 0 and out["seconds_taken"] > 0
  assert not np.array_equal(out["codes"]["video"][0], out["codes"]["video"][1])  # two samples differ

  image = frames_u8(1)[0]
  out = gen.generate(image=image, seed=0)
  assert out["task"] == "i2v" and out["video"].shape == (1, 17, 32, 32, 3)
  np.testing.assert_array_equal(out["codes"]["video"][0, :1], gen._encode(image[None].astype(np.float32) / 127.5 - 1.0))

  video = frames_u8(17, seed=2)
  codes = gen._encode(video.astype(np.float32) / 127.5 - 1.0)
  out = gen.generate(video=video, mask="box:8,24,8,24", prompt="Pong", seed=0)
  assert out["task"] == "inpaint" and out["video"].shape == (1, 17, 32, 32, 3)
  known = ~token_mask("box:8,24,8,24", gen.spec)
  assert known.sum() == 5 * 12  # the 2x2 center tokens of each latent frame are generated
  np.testing.assert_array_equal(out["codes"]["video"][0][known], codes[known])

  out = gen.generate(video=video, mask="border:8", cfg_scale=1.0, prompt="Pong", seed=0)
  assert out["task"] == "outpaint"
  known = ~token_mask("border:8", gen.spec)
  np.testing.assert_array_equal(out["codes"]["video"][0][known], codes[known])


def test_long_video_continues_from_the_last_latents(gen):
  out = gen.generate(prompt="Freeway", seconds=2 * gen.clip_seconds, seed=3)
  frames = round(2 * gen.clip_seconds * gen.spec.fps)
  assert out["video"].shape == (1, frames, 32, 32, 3)
  # 17 frames, then 12 new ones per continuation (its first 1 + 4 frames re-encode the
  # previous clip's last 5): 17 + 12 + 12 >= 34, three clips of 5 latents.
  assert out["segments"] == 3 and out["codes"]["video"].shape == (1, 15, 4, 4)
  # The first clip is the one-clip generation with the same seed (segment 0's key) ...
  one = gen.generate(prompt="Freeway", seed=3)
  np.testing.assert_array_equal(out["codes"]["video"][:, :5], one["codes"]["video"])
  np.testing.assert_array_equal(out["video"][:, :17], one["video"])
  # ... and each next clip's head is the previous frames re-encoded as a fresh clip.
  head = gen._encode(out["video"][0, 12:17].astype(np.float32) / 127.5 - 1.0)
  np.testing.assert_array_equal(out["codes"]["video"][0, 5:7], head)


def test_generate_compiles_once_per_shape(gen):
  gen.generate(prompt="Pong", seed=0)
  before = dict(sampling.TRACES)
  a = gen.generate(prompt="Freeway", seed=5)
  b = gen.generate(prompt="Pong Pong", seed=6)
  assert dict(sampling.TRACES) == before
  assert a["video"].shape == b["video"].shape == (1, 17, 32, 32, 3)


def test_write_video_muxes_audio(tmp_path):
  frames = frames_u8(9, size=30)[:, :, :, :]
  wave = (0.5 * np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000)).astype(np.float32)
  path = media.write_video(tmp_path / "a.mp4", frames[:, :, :29], 8, audio=wave, sample_rate=16000)
  with av.open(str(path)) as c:
    assert c.streams.video[0].codec_context.name == "h264" and c.streams.audio[0].codec_context.name == "aac"
    decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
  assert len(decoded) == 9 and decoded[0].shape == (30, 30, 3)  # odd width padded to even
  back = media.read_audio(path, 16000)
  assert abs(len(back) - 16000) < 2048 and np.abs(back).max() > 0.3
  assert not list(tmp_path.glob(".*tmp*"))
  with pytest.raises(media.MediaError, match="expected uint8"):
    media.write_video(tmp_path / "b.mp4", frames.astype(np.float32), 8)


def test_cli_writes_mp4_gif_and_json(run, tmp_path, capsys, monkeypatch):
  out = tmp_path / "clip.mp4"
  monkeypatch.chdir(run["lm"].parent)  # --lm relative to here, as the README writes it (runs/lm)
  assert main(["generate", "--lm", run["lm"].name, "--prompt", "Pong", "--seed", "2", "--cfg", "2",
               "--gif", "--out", str(out)]) == 0
  with av.open(str(out)) as c:
    assert c.streams.video[0].codec_context.name == "h264" and not c.streams.audio
    assert sum(1 for _ in c.decode(video=0)) == 17
  with Image.open(out.with_suffix(".gif")) as g:
    assert g.n_frames == 17 and g.size == (32, 32)
  summary = json.loads(out.with_suffix(".json").read_text())
  assert summary["task"] == "t2v" and summary["cfg_scale"] == 2.0 and summary["settings"]["seed"] == 2
  assert summary["checkpoints"]["lm_step"] == 3 and summary["video_shape"] == [1, 17, 32, 32, 3]
  assert summary["seconds_taken"] > 0 and summary["tokens_per_second"] > 0


def test_bad_inputs_are_refused_before_sampling(gen, run, tmp_path, capsys):
  lm, out = str(run["lm"]), str(tmp_path / "x.mp4")
  before = dict(sampling.TRACES)
  cases = {
      "text budget of 16": ["--prompt", " ".join(["Pong Freeway"] * 20)],
      "expected 'box:y0,y1,x0,x1'": ["--video", "v.mp4", "--mask", "box:1,2"],
      "the box must lie inside the 32x32": ["--video", "v.mp4", "--mask", "box:0,40,0,8"],
      "task i2v needs image": ["--task", "i2v"],
      "does not exist": ["--image", str(tmp_path / "missing.png")],
      "cannot read video": ["--video", str(tmp_path / "garbage.mp4")],
      "no audio codec": ["--audio", str(tmp_path / "garbage.mp4")],
      "expected a .mp4": ["--prompt", "Pong", "--out", str(tmp_path / "x.avi")],
      "shorter than one clip": ["--prompt", "Pong", "--seconds", "1"],
  }
  (tmp_path / "garbage.mp4").write_bytes(b"not a video")
  for message, args in cases.items():
    argv = ["generate", "--lm", lm, *args] + ([] if "--out" in args else ["--out", out])
    assert main(argv) == 2, message
    assert message in capsys.readouterr().err, message
  assert dict(sampling.TRACES) == before  # nothing was sampled
  # Through the API: arrays of the wrong size or a mask of the wrong shape.
  with pytest.raises(GenerateError, match=r"image array of shape \(16, 16, 3\): expected \[T, 32, 32, 3\]"):
    gen.generate(image=np.zeros((16, 16, 3), np.uint8))
  with pytest.raises(GenerateError, match=r"mask of shape \(5, 8, 8\): expected pixels \(17, 32, 32\)"):
    gen.generate(video=frames_u8(17), mask=np.ones((5, 8, 8), bool))
  with pytest.raises(GenerateError, match="every caption of a list must be non-empty text"):
    gen.generate(prompt=["Pong", " "])


def test_lm_vocab_must_match_the_tokenizer(run, lm_checkpoint, tmp_path):
  other = lm_checkpoint(tmp_path / "lm6", run["tokens"], "vocab.video_bits=6")
  with pytest.raises(GenerateError, match=r"'video_bits': 6.*'video_bits': 8"):
    Generator.load(other, progress=False)
  assert main(["generate", "--lm", str(other), "--prompt", "Pong", "--out", str(tmp_path / "x.mp4")]) == 2


def test_a_tokenizer_changed_since_tokenizing_is_refused(run, lm_checkpoint, tmp_path):
  tokens = tmp_path / "tokens"
  shutil.copytree(run["tokens"], tokens)
  manifest = json.loads((tokens / "manifest.json").read_text())
  manifest["tokenizer"]["fingerprint"] = "0" * 16  # as if the tokenizer had trained on since
  (tokens / "manifest.json").write_text(json.dumps(manifest))
  with pytest.raises(GenerateError, match="is not the one that wrote the LM's token shards"):
    Generator.load(lm_checkpoint(tmp_path / "lm", tokens, "vocab.video_bits=8"), progress=False)


class ToneCodec:
  """A deterministic stand-in with the audio codec contract of `train.audio_trainer`
  (`load_audio_codec`, being built separately): 50 codec frames per second at 16 kHz; level
  0 codes the frame's loudness, level 1 its zero-crossing rate; decode plays one tone per
  frame whose pitch and loudness follow the two codes."""
  sample_rate, hop, levels, size = 16_000, 320, 2, 64

  def encode(self, wave_bs):
    w = np.asarray(wave_bs, np.float32)
    frames = w[:, :w.shape[1] // self.hop * self.hop].reshape(len(w), -1, self.hop)
    loud = np.minimum(np.sqrt(np.mean(frames ** 2, -1)) * 2 * self.size, self.size - 1)
    cross = np.minimum(np.mean(np.abs(np.diff(np.sign(frames), axis=-1)) > 0, -1) * self.size, self.size - 1)
    return np.stack([loud, cross], 1).astype(np.int32)

  def decode(self, codes_blf):
    codes = np.asarray(codes_blf)
    t = np.arange(self.hop) / self.sample_rate
    amp = (codes[:, 0, :, None] + 1) / (2 * self.size)
    pitch = 100 + 50 * codes[:, 1, :, None]
    return (amp * np.sin(2 * np.pi * pitch * t)).reshape(len(codes), -1).astype(np.float32)


def test_audio_tasks_use_the_codec_contract(gen, tmp_path):
  import dataclasses
  g = dataclasses.replace(gen, audio_codec=ToneCodec())
  video = frames_u8(17, seed=4)
  out = g.generate(video=video, task="v2a", seed=0)  # video -> sound
  frames = g.spec.audio_frames  # 2.125 s at 50 Hz = 106 codec frames
  assert out["task"] == "v2a" and out["codes"]["audio"].shape == (1, 2, frames)
  assert out["audio"].shape == (1, frames * ToneCodec.hop) and np.abs(out["audio"]).max() > 0
  np.testing.assert_array_equal(out["codes"]["video"][0], g._encode(video.astype(np.float32) / 127.5 - 1.0))
  path = media.write_video(tmp_path / "v2a.mp4", out["video"][0], out["fps"], out["audio"][0], out["sample_rate"])
  with av.open(str(path)) as c:
    assert len(c.streams.audio) == 1 and sum(1 for _ in c.decode(video=0)) == 17
  # sound -> video: the input waveform is returned with the frames (to mux), one clip long.
  wave = (0.3 * np.sin(np.arange(40_000) * 2 * np.pi * 300 / 16_000)).astype(np.float32)
  out = g.generate(audio=wave, seed=0)
  assert out["task"] == "a2v" and out["video"].shape == (1, 17, 32, 32, 3)
  np.testing.assert_array_equal(out["audio"][0], wave[:round(g.clip_seconds * 16_000)])
  # video + sound -> both continued: the sound condition starts where the video's head does.
  task, example, _, used = g.prepare(video=frames_u8(17, seed=5), audio=wave)
  start = round((17 - (1 + 4 * (g.spec.continuation_frames - 1))) / g.spec.fps * 16_000)
  assert task == "av_continuation" and start > 0
  np.testing.assert_array_equal(used[:len(wave) - start], wave[start:])
  np.testing.assert_array_equal(example["audio"], ToneCodec().encode(used[None])[0, :, :g.spec.audio_frames])


def test_cli_reads_image_and_video_files(run, tmp_path):
  """Files are resized/cropped to the clip: a 48x40 PNG -> i2v; an MP4 + box mask -> inpaint
  (two samples, two MP4s); an MP4 alone with --seconds -> a continued, longer video."""
  Image.fromarray(frames_u8(1, size=48)[0][:, :40]).save(tmp_path / "still.png")
  media.write_video(tmp_path / "in.mp4", frames_u8(20, seed=7, size=40), 8)
  lm = str(run["lm"])
  assert main(["generate", "--lm", lm, "--image", str(tmp_path / "still.png"), "--out", str(tmp_path / "i.mp4")]) == 0
  assert json.loads((tmp_path / "i.json").read_text())["task"] == "i2v"
  assert main(["generate", "--lm", lm, "--video", str(tmp_path / "in.mp4"), "--mask", "box:8,24,8,24",
               "--samples", "2", "--out", str(tmp_path / "p.mp4")]) == 0
  summary = json.loads((tmp_path / "p.json").read_text())
  assert summary["task"] == "inpaint" and summary["video_shape"] == [2, 17, 32, 32, 3]
  assert summary["outputs"]["mp4"] == [str(tmp_path / "p-0.mp4"), str(tmp_path / "p-1.mp4")]
  assert summary["settings"]["mask"] == "box:8,24,8,24" and summary["settings"]["method"] == "autoregressive"
  assert main(["generate", "--lm", lm, "--video", str(tmp_path / "in.mp4"), "--seconds", "3",
               "--out", str(tmp_path / "c.mp4")]) == 0
  with av.open(str(tmp_path / "c.mp4")) as c:
    assert sum(1 for _ in c.decode(video=0)) == 24  # 3 s at 8 fps
  assert json.loads((tmp_path / "c.json").read_text())["task"] == "continuation"


def test_cli_sampling_flags_reach_the_sampler(run, tmp_path):
  """--temperature 0 is greedy (the seed no longer matters); --top_k 1 and a tiny --top_p keep
  only the most likely token, so they give the greedy video too; the settings are recorded."""
  def generate(name, *flags):
    out = tmp_path / f"{name}.mp4"
    assert main(["generate", "--lm", str(run["lm"]), "--prompt", "Pong", "--cfg", "1", "--out", str(out),
                 *flags]) == 0
    with av.open(str(out)) as c:
      frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    return frames, json.loads(out.with_suffix(".json").read_text())["settings"]

  greedy, settings = generate("greedy", "--temperature", "0", "--seed", "1")
  assert settings["temperature"] == 0 and settings["top_k"] == 0 and settings["top_p"] == 1
  np.testing.assert_array_equal(generate("greedy_seed2", "--temperature", "0", "--seed", "2")[0], greedy)
  top_k, settings = generate("top_k", "--top_k", "1", "--seed", "3")
  assert settings["top_k"] == 1
  np.testing.assert_array_equal(top_k, greedy)
  top_p, settings = generate("top_p", "--top_p", "0.000001", "--seed", "4")
  assert settings["top_p"] == 1e-6
  np.testing.assert_array_equal(top_p, greedy)
  a, _ = generate("t1_seed1", "--temperature", "1", "--seed", "1")
  b, _ = generate("t1_seed2", "--temperature", "1", "--seed", "2")
  assert not np.array_equal(a, b)  # at temperature 1 the seed matters


def _sr_checkpoint(workdir, tokens_dir):
  """An SR stage whose low-res grid is the tiny LM's 5x4x4 (-> 5x8x8), as its trainer saves it,
  from seeded initial weights (its trainer has its own tests: tests/train/test_sr_train.py)."""
  import jax

  import configs
  import sharding
  from train import sr_step
  from train.checkpoint import Checkpointer
  cfg = configs.load("sr_tiny", ["sr.height=8", "sr.width=8", "sr.window=4", f"data.tokens_dir={tokens_dir}"])
  ts = sr_step.init_state(cfg, sharding.make_mesh((1, 1, 1), jax.devices()[:1]), seed=0)
  ckpt = Checkpointer(workdir / "checkpoints", cfg)
  ckpt.save(1, ts.state, force=True)
  ckpt.wait()
  ckpt.close()
  return workdir


def test_maskgit_on_the_lm_is_refused_and_upscale_runs_base_sr_decode(run, tmp_path, capsys, atari32_sr_tokens):
  lm = str(run["lm"])
  assert main(["generate", "--lm", lm, "--prompt", "Pong", "--method", "maskgit",
               "--out", str(tmp_path / "m.mp4")]) == 2
  err = capsys.readouterr().err
  assert "next-token objective" in err and "--upscale SR_WORKDIR" in err and err.count("\n") == 1
  assert main(["generate", "--lm", lm, "--prompt", "Pong", "--upscale", lm, "--out", str(tmp_path / "x.mp4")]) == 2
  assert "not an SR stage work directory" in capsys.readouterr().err
  sr = _sr_checkpoint(tmp_path / "sr", atari32_sr_tokens)
  assert main(["generate", "--lm", lm, "--prompt", "Pong", "--upscale", str(sr), "--upscale_cfg", "2",
               "--out", str(tmp_path / "u.mp4")]) == 0
  summary = json.loads((tmp_path / "u.json").read_text())
  assert summary["video_shape"] == [1, 17, 64, 64, 3] and summary["upscaled"]["from"] == [32, 32]
  with av.open(str(tmp_path / "u.mp4")) as c, av.open(str(tmp_path / "u-base.mp4")) as base:
    assert (c.streams.video[0].height, base.streams.video[0].height) == (64, 32)


@pytest.mark.slow
def test_sharded_batch_of_prompts_on_two_processes_equals_one_device(run, tmp_path):
  """`--prompts FILE --mesh 1,-1,1` on 2 processes x 2 CPU devices (gloo): the LM's weights split
  over fsdp=4, only the sampled weights read from the checkpoint; every row's video equals what
  one process samples with the same command on the default mesh.

  Every sampler runs in a subprocess under a time limit, the reference first and alone (its 8
  fake devices do not compete with the two processes): CI twice hung in this test with no
  output, in a way pytest-timeout's Python timer could not stop (tests/conftest.py)."""
  import sys

  from conftest import free_port, kineto_env, run_kineto, run_together
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("Pong\n\n  Freeway  \n")  # blank lines are skipped, captions stripped
  sample = ["generate", "--lm", str(run["lm"]), "--prompts", str(prompts), "--samples", "2", "--seed", "3",
            "--cfg", "2"]
  code, out = run_kineto([*sample, "--out", tmp_path / "one" / "clip.mp4"], timeout=600)
  assert code == 0, out[-3000:]
  port = free_port()
  done = run_together([[sys.executable, "-m", "kineto", "--coordinator_address", f"127.0.0.1:{port}",
                        "--num_processes", "2", "--process_id", str(i), *sample, "--mesh", "1,-1,1",
                        "--out", str(tmp_path / "two" / "clip.mp4")] for i in range(2)],
                      tmp_path / "logs", env=kineto_env(2))
  for code, out in done:
    assert code == 0, out[-3000:]
  one, two = (json.loads((tmp_path / d / "clip.json").read_text()) for d in ("one", "two"))
  assert one["mesh"] != two["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
  assert one["video_shape"] == two["video_shape"] == [4, 17, 32, 32, 3]
  assert [(r["prompt"], r["sample"]) for r in two["rows"]] == [("Pong", 0), ("Pong", 1), ("Freeway", 0),
                                                               ("Freeway", 1)]
  videos = {d: [media.read_video(tmp_path / d / f"clip-{r}.mp4", 17, 32, 32) for r in range(4)]
            for d in ("one", "two")}
  for mine, theirs in zip(videos["one"], videos["two"]):
    np.testing.assert_array_equal(theirs, mine)
  assert not np.array_equal(videos["one"][0], videos["one"][2])  # the prompts differ
