"""Unit tests of ctloop/io/."""
