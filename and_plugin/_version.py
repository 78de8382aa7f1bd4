"""The package version, in one place: the wheel's metadata, ``--version``, the docs and every
checkpoint read it from here."""

__version__ = "0.1.0"
