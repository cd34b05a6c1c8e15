"""train/host.py: after keep_freed_memory, a freed block is reused without page faults."""
import subprocess
import sys

import pytest

SCRIPT = r"""
import resource, sys
from train.host import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
def faults_of_one_round():
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  block = bytearray(256 << 20)  # 256 MB, zero-filled: every page is touched
  del block
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_one_round()
print(applied, faults_of_one_round())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_block_comes_back_without_page_faults():
  def run(mode):
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)
  default_applied, default_faults = run("default")
  kept_applied, kept_faults = run("keep")
  assert kept_applied == "True"
  assert default_faults > 30_000  # 256 MB of 4 KiB pages handed back to the kernel and faulted in again
  assert kept_faults < 1_000, kept_faults
