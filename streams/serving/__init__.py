"""Serving a worker's state over HTTP: interactive queries with routing, /health, /metrics
(README "Interactive queries and health")."""
