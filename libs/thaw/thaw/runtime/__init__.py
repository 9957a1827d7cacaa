"""The in-container runtime.

The agent starts every container with ``python3 /opt/thaw/bootstrap.py``
(:mod:`thaw.runtime.bootstrap`), which hands over to :func:`thaw.runtime.main.main`.
The runtime talks only to its agent, over the socket of
``thaw_core.container_protocol``: it loads the function the spec names from
the code bundle, runs its enter hooks, runs inputs, and exits when told to or
when the agent goes away.

- ``runtime``: the container's life, and the reader threads on the socket;
- ``target``: the user's function, or a class's instances and hooks;
- ``executor``: running user code (loop or thread) into a ``Result``;
- ``codec``, ``failure``: arguments and values; what a caller learns of an exception;
- ``channel``, ``slots``, ``env``, ``log``: the socket, max_inputs, the environment, messages;
- ``paths``: what the agent mounts into the container for it.
"""
