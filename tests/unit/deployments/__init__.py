"""Unit tests of deployments/."""
