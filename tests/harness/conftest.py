"""Fixtures shared by the harness tests."""

from game_support import spawn

__all__ = ["spawn"]
