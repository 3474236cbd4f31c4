"""User-facing errors the command line prints as one line (exit status 2)."""


class ConfigError(ValueError):
  """A config value or key that cannot work; the message names the key (one line)."""
