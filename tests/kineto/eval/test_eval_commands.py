"""`kineto eval tokenizer|generate`: a clear error with too few clips, and eval.json holding the
figures with their protocol and provenance (tiny: the random vidtok_tiny and the tiny LM on
atari32's 4 held-out clips, I3D at 32x32, min_clips lowered to 4)."""
from __future__ import annotations

import json

import numpy as np

from kineto import cli
from kineto.demo import run
from kineto.eval.generate import code_scores, evaluate_generation, motion_scores
from kineto.eval.tokenizer import evaluate_tokenizer


def test_too_few_clips_is_a_clear_error(random_tokenizer, atari32, capsys, tmp_path):
  rc = cli.main(["eval", "tokenizer", "--workdir", str(random_tokenizer(0)), "--data", str(atari32),
                 "--out", str(tmp_path / "e")])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and "4 clips, fewer than the 32" in err and "--clips" in err and len(err.splitlines()) == 1
  assert not (tmp_path / "e").exists()  # refused before any work


def test_tokenizer_eval_json_holds_figures_and_protocol(random_tokenizer, atari32, tmp_path):
  out = tmp_path / "eval" / "tokenizer"  # where the demo's eval stage writes it
  result = evaluate_tokenizer(random_tokenizer(0), atari32, out=out, codec_names=("h264",),
                              min_clips=4, fvd_size=32)
  saved = json.loads((out / "eval.json").read_text())
  tok = saved["tokenizer"]
  assert tok["clips"] == 4 and tok["rfvd"] > 0
  assert tok["bits_per_clip"] == np.prod(tok["latents"]) * tok["bits_per_code"]
  assert tok["bits_per_pixel"] == tok["bits_per_clip"] / (17 * 32 * 32)
  h264 = saved["codecs_at_tokenizer_bits"]["h264"]
  assert h264["budget_bits"] == tok["bits_per_clip"] and h264["clips"] == 4
  # 640 bits for 17 frames is below what x264 can reach on these clips: then none fits, and says so
  assert h264["clips_that_fit"] == 0 or h264["max_bits"] <= tok["bits_per_clip"]
  fvd = saved["protocol"]["fvd"]
  for key in ("frames", "frame_map", "resize", "weights_sha256", "min_clips"):
    assert key in fvd
  assert fvd["weights_sha256"] == "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
  assert saved["protocol"]["clips"] == 4 and "selection" in saved["protocol"]
  prov = saved["provenance"]
  assert len(prov["tokenizer"]["fingerprint"]) == 16 and prov["dataset"]["split"] == "validation"
  assert len(prov["dataset"]["fingerprint"]) == 64 and len(prov["code"]["git_commit"] or "x" * 40) == 40
  assert set(saved["rate_distortion"]) == {"h264@1", "h264@0.5"}
  assert (out / "rate_distortion.png").stat().st_size > 10_000
  assert (out / "side_by_side.png").is_file() and result["files"]["json"] == str(out / "eval.json")
  # the demo report's section reads it back
  summary = run.evaluation_summary({"eval": tmp_path / "eval"})
  assert summary["rfvd"] == tok["rfvd"] and summary["i3d_resize"].startswith("32x32") and not summary["generate"]
  text = "\n".join(run._evaluation_lines(summary))
  assert f"rFVD **{tok['rfvd']:.0f}**" in text and "| h264 | " in text and "rate_distortion.png" in text


def test_generate_eval_json_per_task(tiny_lm_run, tmp_path):
  result = evaluate_generation(tiny_lm_run["lm"], tasks=("t2v", "i2v", "continuation"), out=tmp_path, min_clips=4,
                               fvd_size=32)
  saved = json.loads((tmp_path / "eval.json").read_text())
  assert saved == json.loads(json.dumps(result))
  for task in ("t2v", "i2v", "continuation"):
    row = saved["tasks"][task]
    assert row["samples"] == 4 and row["fvd"] > 0 and 0 <= row["recognition"]["rate"] <= 1
    assert 0 <= row["recognition"]["sprite_rate"] <= 1 and 0 <= row["recognition"]["sprite_none"] <= 1
  # i2v is shown the first frame; continuation the clip's first 1 + 4(k - 1) = 5 frames (k = 2 latents)
  for task, given in (("i2v", 1), ("continuation", 5)):
    motion = saved["tasks"][task]["motion"]
    assert motion["given_frames"] == given and motion["scored_frames"] == 17 - given
    assert motion["generated"]["psnr"] > 0 and motion["repeat_last"]["lpips"] >= 0
    assert motion["real_future_decoded"]["psnr"] > 0  # the ceiling: the real clip's codes, decoded
    # in code space: the generated codes (saved with the clips) after the given latent frames
    with np.load(tmp_path / f"generated_{task}.npz") as made:
      assert made["codes"].shape == (4, 5, 4, 4) and made["codes"].dtype.kind in "iu"
    codes = motion["codes"]
    assert codes["given_latents"] == given // 4 + 1 and 0 <= codes["accuracy"] <= 1
    assert 0 <= codes["repeat_last_accuracy"] <= 1
    assert codes["beats_repeat_last"] == (codes["accuracy"] > codes["repeat_last_accuracy"])
  summary = {"clips": 4, "bits_per_clip": 640, "bits_per_pixel": 0.04, "psnr": 10.0, "lpips": 0.5, "rfvd": 1.0,
             "i3d_resize": "32x32, bilinear", "codecs": {}, "recognition_ceiling": 0.5,
             "sprite_recognition_ceiling": 0.75,
             "generate": {t: {"samples": 4, "fvd": r["fvd"], "recognition_rate": r["recognition"]["rate"],
                              "sprite_recognition_rate": r["recognition"]["sprite_rate"],
                              "motion": r.get("motion")} for t, r in saved["tasks"].items()}}
  text = "\n".join(run._evaluation_lines(summary))  # the demo report's motion table
  t2v = saved["tasks"]["t2v"]["recognition"]
  assert f"| t2v | 4 | {saved['tasks']['t2v']['fvd']:.0f} | {t2v['rate']:.1%} | {t2v['sprite_rate']:.1%} |" in text
  assert "the colour classifier reads 50.0% and the sprite reader 75.0%" in text
  motion = saved["tasks"]["continuation"]["motion"]
  assert (f"| continuation | 5 | {run._fmt(motion['generated']['psnr'])} | "
          f"{run._fmt(motion['repeat_last_decoded']['psnr'])} | {run._fmt(motion['repeat_last']['psnr'])} | "
          f"{run._fmt(motion['real_future_decoded']['psnr'])} |") in text
  row = next(line for line in text.splitlines() if line.startswith("| continuation | 5 |"))
  assert row.endswith(f"| {motion['codes']['accuracy']:.1%} | {motion['codes']['repeat_last_accuracy']:.1%} |")
  rec = saved["recognition"]
  assert rec["chance"] == 0.5 and 0 <= rec["held_out_real_accuracy"] <= 1
  assert 0 <= rec["sprite_held_out_real_accuracy"] <= 1 and "SpriteReader" in rec["sprite_reader"]
  assert saved["provenance"]["lm"]["fingerprint"] and saved["provenance"]["tokenizer"]["fingerprint"]
  assert "seed" in saved["protocol"]["seeds"] and saved["protocol"]["fvd"]["frames"] == 16
  assert (tmp_path / "contact_sheet.png").is_file()
  assert saved["protocol"]["sampling"].startswith("autoregressive, temperature 1,")

  # Another temperature samples again: the saved clips of the first run are not reused.
  with np.load(tmp_path / "generated_t2v.npz") as first:
    first_t2v = first["video"]
  greedy = evaluate_generation(tiny_lm_run["lm"], tasks=("t2v",), out=tmp_path, min_clips=4, fvd_size=32,
                               temperature=0.0)
  assert greedy["protocol"]["sampling"].startswith("autoregressive, temperature 0,")
  with np.load(tmp_path / "generated_t2v.npz") as again:
    assert float(again["temperature"]) == 0.0 and not np.array_equal(again["video"], first_t2v)
  assert cli.main(["eval", "generate", "--lm", str(tiny_lm_run["lm"]), "--temperature", "-1"]) == 2


def test_codes_are_scored_against_repeating_the_last_given_latent_frame():
  rng = np.random.default_rng(0)
  real = rng.integers(0, 1024, (3, 3, 8, 8))
  assert code_scores(real, real, given=2) == {"given_latents": 2, "accuracy": 1.0, "repeat_last_accuracy":
                                              float(np.mean(real[:, 1] == real[:, 2])), "beats_repeat_last": True}
  still = real.copy()
  still[:, 2] = real[:, 1]  # the static guess in codes scores exactly what repeating scores
  assert code_scores(still, real, given=2)["accuracy"] == code_scores(still, real, given=2)["repeat_last_accuracy"]
  assert not code_scores(still, real, given=2)["beats_repeat_last"]
  half = still.copy()
  half[:, 2, :4] = real[:, 2, :4]  # half the future codes right, the rest a mostly-wrong copy
  scores = code_scores(half, real, given=2)
  assert scores["accuracy"] >= 0.5 and scores["beats_repeat_last"]
  i2v = code_scores(real, real, given=1)  # two future latent frames against the first one repeated
  assert i2v["repeat_last_accuracy"] == float(np.mean(real[:, :1] == real[:, 1:]))


def test_motion_is_scored_against_repeating_the_last_given_frame():
  rng = np.random.default_rng(0)
  real = rng.integers(0, 256, (2, 9, 32, 32, 3), dtype=np.uint8)
  exact = motion_scores(real.copy(), real, given=5)
  assert exact["scored_frames"] == 4 and exact["generated"]["psnr"] == 100.0  # the 1e-10 MSE floor
  assert exact["beats_repeat_last"] == {"psnr": True, "lpips": True, "moving_psnr": True}
  assert exact["generated"]["moving_psnr"] == 100.0 and 0.5 < exact["moving_pixels"] < 1  # noise: most pixels move
  frozen = real.copy()
  frozen[:, 5:] = real[:, 4:5]
  still = motion_scores(frozen, real, given=5)
  assert still["generated"] == still["repeat_last"]
  assert still["beats_repeat_last"] == {"psnr": False, "lpips": False, "moving_psnr": False}
  # Through a lossy codec (noise on every frame): a frozen decoded frame equals the decoded
  # baseline and does not beat it; the real future through the same codec does.
  noisy = np.clip(real.astype(int) + rng.integers(-40, 41, real.shape), 0, 255).astype(np.uint8)
  coded_still = noisy.copy()
  coded_still[:, 5:] = noisy[:, 4:5]
  frozen_coded = motion_scores(coded_still, real, given=5)
  assert frozen_coded["generated"] == frozen_coded["repeat_last_decoded"]
  assert frozen_coded["beats_repeat_last_decoded"] == {"psnr": False, "lpips": False, "moving_psnr": False}
  moving = motion_scores(noisy, real, given=5)
  assert moving["beats_repeat_last_decoded"] == {"psnr": True, "lpips": True, "moving_psnr": True}
  # Moving PSNR scores only where the real future moves: a clip that is right there and wrong
  # everywhere else beats the static guess on it, and loses on the whole frame.
  still_bg = np.repeat(real[:, :1], 9, axis=1)
  still_bg[0, 5:, :4, :4] = real[0, 4, :4, :4] ^ 0xFF  # one corner of one clip moves
  right_there = np.zeros_like(still_bg)
  right_there[:, :5] = still_bg[:, :5]
  right_there[0, 5:, :4, :4] = still_bg[0, 5:, :4, :4]
  corner = motion_scores(right_there, still_bg, given=5)
  assert corner["moving_pixels"] == 16 / (32 * 32) / 2 and corner["generated"]["moving_psnr"] == 100.0
  assert corner["beats_repeat_last"] == {"psnr": False, "lpips": False, "moving_psnr": True}
  nothing_moves = motion_scores(still_bg[1:], still_bg[1:], given=5)
  assert nothing_moves["moving_pixels"] == 0 and nothing_moves["beats_repeat_last"]["moving_psnr"] is None
  # The ceiling row: the real clips through the codec, scored like the generated frames.
  ceiling = motion_scores(coded_still, real, given=5, real_decoded_nthwc=noisy)
  assert ceiling["real_future_decoded"] == moving["generated"] and "beats_real_future_decoded" not in ceiling
  assert "real_future_decoded" not in moving
