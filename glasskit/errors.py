"""Errors that say what is wrong and where."""


class GlasskitError(ValueError):
    """Base class for every error glasskit raises on bad input."""


class DataError(GlasskitError):
    """A data file, column or value is missing or malformed."""


class ConfigError(GlasskitError):
    """A configuration or notebook parameter is invalid."""
