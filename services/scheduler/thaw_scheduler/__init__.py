"""thaw scheduler service."""
