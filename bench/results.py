"""`make bench`: runs every benchmark script and writes bench/RESULTS.md from their figures.

  python bench/results.py [--only sampling,audio_codec] [--out bench/RESULTS.md] [--torch-python PY]
  python bench/results.py --readme    # only rewrite the README's figures from bench/results.json

Each `bench/*.py` script (except this one, the helpers, the PyTorch peers, which need a
Python with torch, and `device.py` / `memory_table.py`, run on their own; see SKIP) runs
in its own process with its default arguments; its last output line is one JSON object of
figures. RESULTS.md gets the date, the machine, and per script its one-line purpose and
every figure, exactly as printed. The raw lines also go to
`bench/results.json`, and the README's "Measured figures" block (between its `bench:begin`
and `bench:end` markers) is generated from that file: `--readme` regenerates it without
running anything, and tests/test_readme.py checks the README against the file.
`--torch-python PY` (`make bench TORCH_PYTHON=PY`) also runs the PyTorch peer
(`bench/torch_baseline.py`, `torch_decode.py`, `torch_vidtok.py` under PY, from `lm_step.py`,
`sampling.py`, `vidtok_throughput.py`); without it the comparison is marked
absent. Interpretation and history of the figures live in bench/NOTES.md.
A script that fails is reported as failed (with its last lines of output) and makes this
command exit 1, after the others have run.
"""
from __future__ import annotations

import argparse
import ast
import json
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
# Helpers, the PyTorch peers (run by the scripts that compare with them, under --torch-python)
# and the scripts run on their own: the device run (a GPU) and the memory table (TPU compiles).
SKIP = {"common.py", "timing.py", "results.py", "torch_baseline.py", "torch_decode.py", "torch_vidtok.py",
        "device.py", "memory_table.py",
        "sprite_reader.py"}  # needs a demo run's data: run by hand (bench/NOTES.md)
PEERS = {"lm_step.py", "sampling.py", "vidtok_throughput.py"}  # take --torch-python


def scripts(only: list[str] | None) -> list[pathlib.Path]:
  found = sorted(p for p in HERE.glob("*.py") if p.name not in SKIP)
  if only:
    unknown = sorted(set(only) - {p.stem for p in found})
    if unknown:
      raise SystemExit(f"--only {','.join(unknown)}: no such benchmark; have {[p.stem for p in found]}.")
    found = [p for p in found if p.stem in only]
  return found


def purpose(path: pathlib.Path) -> str:
  doc = ast.get_docstring(ast.parse(path.read_text())) or ""
  return doc.split("\n\n")[0].replace("\n", " ")


def run(path: pathlib.Path, args: tuple[str, ...] = ()) -> dict:
  started = time.perf_counter()
  proc = subprocess.run([sys.executable, str(path), *args], cwd=HERE.parent, capture_output=True, text=True)
  lines = [l for l in proc.stdout.splitlines() if l.strip()]
  result = {"script": path.name, "purpose": purpose(path), "seconds": round(time.perf_counter() - started, 1),
            "returncode": proc.returncode}
  try:
    result["figures"] = json.loads(lines[-1]) if proc.returncode == 0 else None
  except (IndexError, json.JSONDecodeError):
    result["figures"] = None
  if result["figures"] is None:
    result["tail"] = (proc.stdout + proc.stderr).splitlines()[-15:]
  return result


def _value(v) -> str:
  if isinstance(v, float):
    return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
  if isinstance(v, list):
    return f"`{json.dumps(v)}`"
  return str(v)


MACHINE_KEYS = {"platform", "processor", "cpu_count", "jax", "backend", "devices"}  # in the header


def flatten(figures: dict, prefix: str = "") -> dict:
  """{"configs": {"demo": {"fps": 1}}} -> {"configs.demo.fps": 1}: one table row per number."""
  flat = {}
  for key, value in figures.items():
    if isinstance(value, dict):
      flat |= flatten(value, f"{prefix}{key}.")
    elif f"{prefix}{key}" not in MACHINE_KEYS:
      flat[f"{prefix}{key}"] = value
  return flat


def markdown(results: list[dict], machine: dict, date: str) -> str:
  lines = ["# Benchmark results", "",
           f"Written by `make bench` (`bench/results.py`) on {date}. Every figure below comes from "
           "one run of the named script on this machine; ratios are taken within that run. "
           "Interpretation and history: `bench/NOTES.md`.", "",
           "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()) + ".", ""]
  for r in results:
    lines += [f"## `bench/{r['script']}`", "", r["purpose"], "",
              f"Ran in {r['seconds']:.0f} s (`python bench/{r['script']}`).", ""]
    if r["figures"] is None:
      lines += [f"**Failed** (exit code {r['returncode']}); last output:", "", "```", *r["tail"], "```", ""]
      continue
    lines += ["| figure | value |", "|---|---|"]
    lines += [f"| `{k}` | {_value(v)} |" for k, v in flatten(r["figures"]).items()]
    lines.append("")
  return "\n".join(lines)


# --- the README's "Measured figures" block, from bench/results.json -------------------------

README = HERE.parent / "README.md"
BEGIN, END = "<!-- bench:begin (generated by `python bench/results.py --readme` from bench/results.json) -->", \
    "<!-- bench:end -->"

# Per script: the README's first column and its figures, from that script's JSON object.
ROWS = {
    "lm_step.py": ("one `lm_bench` training step (34M params, batch 4 x 1,280 tokens, AdamW)",
                   lambda f: f"{f['tokens_per_second']:,.0f} tokens/s, **MFU {f['mfu']:.2f}** of the "
                             f"{f['matmul_flops_per_second'] / 1e9:.0f} GFLOP/s matmul peak measured in the same run"),
    "train_loop.py": ("the real loop with async checkpoints every 2 steps",
                      lambda f: f"{f['checkpoint_overhead']:+.1%} step time; loader "
                                f"{f['loader_to_step_ratio']:,.0f}x faster than the step; MFU {f['mfu']:.2f}"),
    "sampling.py": ("1,280 video tokens from `lm_bench`",
                    lambda f: f"KV-cached {f['cached_tokens_per_second']:.1f} tokens/s vs "
                              f"{f['uncached_tokens_per_second']:.2f} uncached: **{f['speedup']:.1f}x**; "
                              f"decode step {f['decode_latency_start_ms']:.0f} ms at the start, "
                              f"{f['decode_latency_end_ms']:.0f} ms at the end; guidance costs "
                              f"{f['cfg_cost_ratio']:.2f}x; MaskGIT {f['maskgit_steps_per_second']:.2f} steps/s"),
    "vidtok_throughput.py": ("17x128x128 clips", lambda f: _vidtok(f["configs"])),
    "audio_codec.py": ("2 x 10 s of real audio", lambda f: _audio(f["configs"])),
}


def _vidtok(c: dict) -> str:
  demo, big = c["vidtok_demo"], c["vidtok_magvit2"]
  return (f"`vidtok_demo` encodes {demo['encode_fps']:.0f} and decodes {demo['decode_fps']:.0f} frames/s "
          f"({demo['flops_ratio']:.2f} of the matmul peak); `vidtok_magvit2` runs at "
          f"**{big['flops_ratio']:.2f}** of it")


def _audio(c: dict) -> str:
  demo, big = c["audio_demo"], c["audio_soundstream"]
  return (f"`audio_demo` encodes {demo['encode_realtime_factor']:.0f}x and decodes "
          f"{demo['decode_realtime_factor']:.0f}x real time; VideoPoet-scale `audio_soundstream` "
          f"{big['encode_realtime_factor']:.0f}x / {big['decode_realtime_factor']:.0f}x")


ORDER = ("lm_step.py", "train_loop.py", "sampling.py", "vidtok_throughput.py", "audio_codec.py")


def _machine(data: dict) -> str:
  m = data.get("machine") or next((r["figures"] for r in data["results"] if r["figures"]
                                   and "cpu_count" in r["figures"]), {})
  return f"a {m.get('cpu_count', '?')}-core {m.get('processor', '?')} CPU, jax {m.get('jax', '?')}"


def readme_block(data: dict) -> str:
  """The README's measured-figures block (markers included) from results.json's contents."""
  by_script = {r["script"]: r for r in data["results"]}
  lines = [BEGIN,
           f"`make bench` runs every benchmark on this machine and writes `bench/RESULTS.md` and "
           f"`bench/results.json`; this block is generated from the latter. Figures of the run of "
           f"{data['date']} on {_machine(data)}, float32; each ratio is taken within that run "
           "(`bench/NOTES.md` has the analysis and history).", "",
           "| benchmark | figure |", "|---|---|"]
  for script in ORDER + tuple(sorted(set(by_script) - set(ORDER))):
    r = by_script.get(script)
    if r is None:
      continue
    what, figures = ROWS.get(script, (r["purpose"], None))
    if r["figures"] is None:
      cell = f"failed in this run (exit code {r['returncode']}; `bench/RESULTS.md` has its output)"
    elif figures is None:
      cell = "see `bench/RESULTS.md`"
    else:
      cell = figures(r["figures"])
    lines.append(f"| `{script}`: {what} | {cell} |")
  lines.append("")
  step = (by_script.get("lm_step.py") or {}).get("figures") or {}
  if "speed_vs_torch" in step:
    lines.append(f"The PyTorch peer (`bench/torch_baseline.py`, a plain PyTorch decoder of the same shape, run by "
                 f"`make bench TORCH_PYTHON=PY` in the same run): kineto reached {step['speed_vs_torch']:.2f}x its "
                 f"tokens/s ({step['tokens_per_second']:,.0f} vs {step['torch_tokens_per_second']:,.0f}; MFU "
                 f"{step['mfu']:.2f} vs torch's {step['torch_mfu']:.2f} of its own matmul peak); XLA's CPU matmul "
                 f"ran at {step['matmul_flops_per_second'] / step['torch_matmul_flops_per_second']:.2f}x of torch's "
                 f"({step['matmul_flops_per_second'] / 1e9:.0f} vs "
                 f"{step['torch_matmul_flops_per_second'] / 1e9:.0f} GFLOP/s).")
    dec = (by_script.get("sampling.py") or {}).get("figures") or {}
    if "decode_b1_start_vs_torch" in dec:
      points = [f"{p.replace('_', ' ')} {dec[f'decode_ms_{p}']:.1f} vs {dec[f'torch_decode_ms_{p}']:.1f} ms "
                f"(**{dec[f'decode_{p}_vs_torch']:.2f}x**, {dec[f'decode_{p}_vs_floor']:.1f}x the memory floor)"
                for p in ("b1_start", "b1_end", "b8_start", "b8_end")]
      lines[-1] += f" Decoding against `bench/torch_decode.py` (static KV cache): {', '.join(points)}."
    tok = ((by_script.get("vidtok_throughput.py") or {}).get("figures") or {}).get("configs") or {}
    if tok and all("encode_vs_torch" in c for c in tok.values()):
      rows = [f"`{name}` encode **{c['encode_vs_torch']:.2f}x**, decode **{c['decode_vs_torch']:.2f}x**"
              for name, c in tok.items()]
      lines[-1] += (f" The tokenizer against `bench/torch_vidtok.py`: {'; '.join(rows)} (kineto's frames/s over "
                    "the peer's; every ratio here: > 1 means kineto is faster).")
  else:
    lines.append("The PyTorch comparison is absent from this run: `make bench TORCH_PYTHON=PY` (PY a Python "
                 "with torch) also runs `bench/torch_baseline.py`, a plain PyTorch decoder of the same shape, "
                 "and puts the ratio here (`bench/NOTES.md` records an earlier, hand-run comparison).")
  lines.append(END)
  return "\n".join(lines)


def replace_block(text: str, block: str, begin: str = BEGIN, end: str = END) -> str:
  """`text` with the part from `begin` to `end` (markers included) replaced by `block`."""
  i, j = text.find(begin), text.find(end)
  if i < 0 or j < i:
    raise SystemExit(f"README: no block between {begin!r} and {end!r}.")
  return text[:i] + block + text[j + len(end):]


def write_readme(results_json: pathlib.Path = HERE / "results.json", readme: pathlib.Path = README) -> None:
  block = readme_block(json.loads(results_json.read_text()))
  readme.write_text(replace_block(readme.read_text(), block))
  print(f"wrote {readme}'s measured figures from {results_json}")


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--only", help="comma-separated script names (default: all)")
  parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
  parser.add_argument("--torch-python", metavar="PY", help="a Python with torch: run the PyTorch peer too")
  parser.add_argument("--readme", action="store_true",
                      help="only rewrite the README's measured figures from bench/results.json")
  args = parser.parse_args()
  if args.readme:
    write_readme()
    return 0
  sys.path.insert(0, str(HERE))
  from common import machine_info
  results = []
  for path in scripts(args.only.split(",") if args.only else None):
    print(f"== bench/{path.name}", flush=True)
    extra = ("--torch-python", args.torch_python) if args.torch_python and path.name in PEERS else ()
    results.append(run(path, extra))
    print(json.dumps(results[-1]["figures"]) if results[-1]["figures"] else "\n".join(results[-1]["tail"]), flush=True)
  date = time.strftime("%Y-%m-%d")
  out = pathlib.Path(args.out)
  tmp = out.with_name(out.name + ".tmp")
  tmp.write_text(markdown(results, machine_info(), date))
  tmp.replace(out)
  (HERE / "results.json").write_text(json.dumps({"date": date, "machine": machine_info(),
                                                 "torch_python": args.torch_python, "results": results},
                                                indent=1) + "\n")
  print(f"wrote {out}")
  if not args.only:  # a whole run: the README shows it
    write_readme()
  return 0 if all(r["figures"] is not None for r in results) else 1


if __name__ == "__main__":
  sys.exit(main())
