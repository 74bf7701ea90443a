"""Unit tests of ctloop/steps/."""
