"""thaw snapshots service."""
