"""The README's figures are the files' figures: its measured-figures block equals what
`bench/results.py` generates from `bench/results.json` (written by `make bench`), and its demo
block equals what `kineto/demo/publish.py` generates from `docs/demo.json` (written by
`make demo`, with the contact sheet the README shows)."""
import importlib.util
import json
import pathlib

import pytest

from kineto.demo import publish

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _bench_results():
  spec = importlib.util.spec_from_file_location("bench_results", ROOT / "bench" / "results.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _block(text: str, begin: str, end: str) -> str:
  i, j = text.find(begin), text.find(end)
  assert i >= 0 and j > i, f"the README has no block between {begin!r} and {end!r}"
  return text[i:j + len(end)]


def test_measured_figures_are_bench_results_json():
  results = _bench_results()
  data = json.loads((ROOT / "bench" / "results.json").read_text())
  want = results.readme_block(data)
  assert _block(README, results.BEGIN, results.END) == want, (
      "README's measured figures differ from bench/results.json: run `python bench/results.py --readme`")
  assert f"of the run of {data['date']}" in want
  torch = any("speed_vs_torch" in (r["figures"] or {}) for r in data["results"] if r["script"] == "lm_step.py")
  assert ("PyTorch comparison is absent" in want) != torch


def test_bench_block_shows_the_pytorch_peer_when_it_ran():
  results = _bench_results()
  data = json.loads((ROOT / "bench" / "results.json").read_text())
  step = next(r for r in data["results"] if r["script"] == "lm_step.py")
  step["figures"] = dict(step["figures"], torch_tokens_per_second=962.0, torch_mfu=0.59,
                         torch_matmul_flops_per_second=336e9,
                         speed_vs_torch=round(step["figures"]["tokens_per_second"] / 962, 3))
  block = results.readme_block(data)
  assert "absent" not in block and "962 tokens/s" not in block and "vs 962;" in block


def test_demo_figures_are_docs_demo_json():
  demo_json = ROOT / "docs" / "demo.json"
  block = _block(README, publish.BEGIN, publish.END)
  if not demo_json.is_file():
    pytest.skip("docs/demo.json is not committed yet: run `make demo` (it writes docs/demo.json, the "
                "pictures and this README block) and commit what it writes")
  report = json.loads(demo_json.read_text())
  assert block == publish.readme_block(report), (
      "README's demo figures differ from docs/demo.json: run `python -m kineto.demo.publish --readme-only`")
  assert f"{report['recognition']['t2v_recognition_rate']:.1%}" in block
  for name in publish.PICTURES:
    assert (ROOT / "docs" / name).is_file() and f"docs/{name}" in README


def test_demo_block_is_generated_from_a_report(tmp_path):
  """publish() copies a run's report and pictures into docs/ and rewrites the block."""
  report = {"plan": "quick", "date": "2026-12-01 10:00:00", "stages_total_seconds": 754.2,
            "tokenizer": {"clips": 16, "psnr": 16.04, "ssim": 0.281, "lpips": 0.33, "codes_used": 707,
                          "usage_fraction": 707 / 1024, "usage_entropy_bits": 9.05},
            "audio_codec": {"clips": 16, "spectral_distance_db": 7.01, "silence_spectral_distance_db": 14.8,
                            "snr_db": 6.6},
            "lm": {"held_out_loss_per_task": {"t2v": 1.13, "av_continuation": 2.64}},
            "recognition": {"t2v_recognition_rate": 19 / 32, "t2v_samples": 32, "chance": 0.125,
                            "held_out_real_accuracy": 1.0, "held_out_reconstruction_accuracy": 0.875,
                            "sprite_t2v_recognition_rate": 3 / 32, "sprite_t2v_none": 0.5,
                            "sprite_held_out_real_accuracy": 1.0, "sprite_held_out_reconstruction_accuracy": 0.25},
            "video_to_audio": {"matched_rate": 0.5, "clips": 8, "chance": 0.125, "matched_distance_db": 10.3,
                               "mismatched_distance_db": 14.8},
            "sampling_tokens_per_second": 503.2, "sampling_calls": 40}
  run, docs = tmp_path / "run", tmp_path / "docs"
  run.mkdir()
  docs.mkdir()
  (run / "report.json").write_text(json.dumps(report))
  for name in publish.PICTURES:
    (run / name).write_bytes(b"png")
  readme = tmp_path / "README.md"
  readme.write_text(f"before\n{publish.BEGIN}\nold\n{publish.END}\nafter\n")
  publish.publish(run, docs, readme)
  text = readme.read_text()
  assert text.startswith("before\n") and text.endswith("\nafter\n") and "old" not in text
  assert json.loads((docs / "demo.json").read_text()) == report
  for figure in ("**59.4%** of 32 samples", "PSNR 16.0 dB", "707 of 1,024 codes", "av-continuation 2.64",
                 "503 tokens/s", "40 sampling calls", "12 min 34 s",
                 "| the same, read by the sprite reader | **9.4%** of 32 samples (no game seen in 50.0%"):
    assert figure in text, figure
