"""Kafka plumbing for the runtime: client settings, admin helpers, outage tracking."""
