"""`make bench`: runs every benchmark script and writes bench/RESULTS.md from their figures.

  python bench/results.py [--only sampling,audio_codec] [--out bench/RESULTS.md]

Each `bench/*.py` script (except this one, `common.py` and `torch_baseline.py`, which
needs a Python with torch) runs in its own process with its default arguments; its last
output line is one JSON object of figures. RESULTS.md gets the date, the machine, and per
script its one-line purpose and every figure, exactly as printed. The raw lines also go to
`bench/results.json`. Interpretation and history of the figures live in bench/NOTES.md.
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
SKIP = {"common.py", "results.py", "torch_baseline.py"}


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


def run(path: pathlib.Path) -> dict:
  started = time.perf_counter()
  proc = subprocess.run([sys.executable, str(path)], cwd=HERE.parent, capture_output=True, text=True)
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


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--only", help="comma-separated script names (default: all)")
  parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
  args = parser.parse_args()
  sys.path.insert(0, str(HERE))
  from common import machine_info
  results = []
  for path in scripts(args.only.split(",") if args.only else None):
    print(f"== bench/{path.name}", flush=True)
    results.append(run(path))
    print(json.dumps(results[-1]["figures"]) if results[-1]["figures"] else "\n".join(results[-1]["tail"]), flush=True)
  date = time.strftime("%Y-%m-%d")
  out = pathlib.Path(args.out)
  tmp = out.with_name(out.name + ".tmp")
  tmp.write_text(markdown(results, machine_info(), date))
  tmp.replace(out)
  (HERE / "results.json").write_text(json.dumps({"date": date, "results": results}, indent=1) + "\n")
  print(f"wrote {out}")
  return 0 if all(r["figures"] is not None for r in results) else 1


if __name__ == "__main__":
  sys.exit(main())
