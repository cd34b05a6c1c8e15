"""Fakes an 8-device CPU host before JAX starts, so one run tests 1- and 8-device meshes."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
