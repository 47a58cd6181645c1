"""Kafka plumbing: the local development broker and admin helpers."""
