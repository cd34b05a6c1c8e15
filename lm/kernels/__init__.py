"""Hand-written kernels that XLA calls through FFI (built on first use)."""
