"""Unit tests of ctloop/core/."""
