"""Pixels and waveforms <-> discrete tokens: the causal video tokenizer (MAGVIT-v2 style,
lookup-free quantization) and the audio codec. Not built yet: the next issues add them.
Nothing here may import `lm` or `train`."""
