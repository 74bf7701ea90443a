"""Unit tests of ctloop/ops/."""
