"""thaw: serverless Python on your own machines. ``import thaw as modal``.

Importing thaw is cheap (every container does it): the HTTP client, rich and
click are imported only when a call, a progress bar or the CLI needs them.
"""

from thaw import exception
from thaw._env import current_function_call_id, is_local
from thaw._output import enable_output
from thaw.app import App, LocalEntrypoint
from thaw.cls import Cls
from thaw.concurrency import batched, concurrent
from thaw.dict import Dict
from thaw.exception import Error
from thaw.functions import Function, FunctionCall
from thaw.image import Image
from thaw.markers import Parameter, enter, exit, method, parameter
from thaw.queue import Queue
from thaw.retries import Retries
from thaw.sandbox import Sandbox
from thaw.schedule import Cron, Period
from thaw.secret import Secret
from thaw.volume import Volume
from thaw.web import asgi_app, fastapi_endpoint, web_endpoint, web_server, wsgi_app

__all__ = [
    "App",
    "Cls",
    "Cron",
    "Dict",
    "Error",
    "Function",
    "FunctionCall",
    "Image",
    "LocalEntrypoint",
    "Parameter",
    "Period",
    "Queue",
    "Retries",
    "Sandbox",
    "Secret",
    "Volume",
    "asgi_app",
    "batched",
    "concurrent",
    "current_function_call_id",
    "enable_output",
    "enter",
    "exception",
    "exit",
    "fastapi_endpoint",
    "is_local",
    "method",
    "parameter",
    "web_endpoint",
    "web_server",
    "wsgi_app",
]
