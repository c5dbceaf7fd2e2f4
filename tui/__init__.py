"""Triptych: a keyboard-driven terminal assistant for local AI."""

__version__ = "0.1.0"
