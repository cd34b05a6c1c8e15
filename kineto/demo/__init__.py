"""The main job (`kineto demo`): its stages (run.py), the game classifier that reads the
samples (recognize.py) and the pictures of the report (report.py)."""
from kineto.demo.run import run_demo

__all__ = ["run_demo"]
