"""Training: sharded state and the jitted step, the optimizer, the training loop, FLOP
accounting and the `kineto` command line. Wires `configs`, `sharding` and `lm` together."""
