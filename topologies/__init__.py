"""Reference topologies: one module each, exposing ``topology``."""
