"""A module an image adds with add_local_python_source."""

GREETING = "from the helper"
