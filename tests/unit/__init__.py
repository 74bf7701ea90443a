"""Unit tests, one folder per layer of the code they test (ctloop/<layer>, tasks, deployments)."""
