"""thaw agent service."""
