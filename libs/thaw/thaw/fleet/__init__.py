"""A fleet's deployment files, rendered from one description.

``description`` says what runs (every service, its settings, its secrets, what
it needs of its host); ``compose`` renders ``compose.yaml`` from it and
``k8s`` renders ``deploy/k8s/thaw.yaml``, so the two cannot drift apart.
``python -m thaw.fleet ROOT`` writes both; ``--check`` says whether the
committed files are what the description renders (the test suite runs it).
"""
