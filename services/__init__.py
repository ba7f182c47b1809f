"""Samhandling services: one folder per service, shared plumbing in `services.common`."""
