"""Unit tests of tasks/."""
