"""Unit tests of ctloop/ml/."""
