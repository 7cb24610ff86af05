"""The errors a user's input can cause, in a leaf module that every layer may import."""


class ConfigError(ValueError):
  """A config value (file, command line or config.json) that cannot work; one clear line."""


class DataError(ValueError):
  """Data that cannot feed the run (e.g. a stream in which nothing decodes); one clear line."""
