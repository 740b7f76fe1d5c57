"""Errors raised by the episode store."""


class DatasetError(ValueError):
    """A path is not a readable episode dataset (names the path and the problem)."""


class SchemaMismatchError(DatasetError):
    """New data does not match an existing dataset (names both values)."""
