"""thaw volumes service."""
