"""Web endpoints inside the container: the user's app (ASGI, WSGI through
a2wsgi, a FastAPI app around a plain function, or a proxy to a server's
port) driven one request at a time, with the request and response parts
exchanged with the agent over the socket."""

from thaw.runtime.web.inputs import WebInputs

__all__ = ["WebInputs"]
