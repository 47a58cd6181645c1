"""The ``streams`` command line by concern; :mod:`streams.cli` assembles it."""
