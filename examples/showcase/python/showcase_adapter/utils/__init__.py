"""Helpers shared by the handlers."""
