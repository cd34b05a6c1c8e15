"""`ConfigError` and the small validation helpers every config family uses."""
from __future__ import annotations

import math


class ConfigError(ValueError):
  """A config value is invalid; the message names the field, the value and the fix."""


def _check_choice(field: str, value, choices) -> None:
  if value not in choices:
    raise ConfigError(f"{field}={value!r} is not one of {list(choices)}.")


def _check_positive(obj, *fields: str) -> None:
  for f in fields:
    v = getattr(obj, f)
    if not 0 < v < math.inf:  # also catches NaN
      raise ConfigError(f"{type(obj).__name__}.{f}={v} must be a finite number > 0.")
