"""glasskit: a research workbench for long-sequence generative recommendation."""

from glasskit.config import Config, load_config
from glasskit.errors import ConfigError, DataError, GlasskitError
from glasskit.profiles import apply_variant, configure, profile

__all__ = ["Config", "apply_variant", "ConfigError", "configure", "DataError", "GlasskitError",
           "load_config", "profile"]
__version__ = "0.1.0"
