"""Shared server plumbing: every service builds on this package instead of repeating it."""
