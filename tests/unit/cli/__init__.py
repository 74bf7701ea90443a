"""Unit tests of ctloop/cli.py."""
