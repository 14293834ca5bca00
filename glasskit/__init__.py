"""glasskit: a research workbench for long-sequence generative recommendation."""

from glasskit.config import Config, apply_variant, configure, load_config, profile
from glasskit.errors import ConfigError, DataError, GlasskitError

__all__ = ["Config", "apply_variant", "ConfigError", "configure", "DataError", "GlasskitError",
           "load_config", "profile"]
__version__ = "0.1.0"
