"""thaw gateway service."""
