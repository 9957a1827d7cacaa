"""A ``fastapi_endpoint`` as the guide writes it, on two warm containers, and
the same FastAPI app for bare uvicorn (``bare_app``), built as thaw's runtime
builds it: the function as the one route of a FastAPI app."""

import thaw as modal

app = modal.App("bench-web")


def predict(request: dict) -> dict:
    return {"prediction": request["input"]}


# Each may use up to two cores (the whole machine), as bare uvicorn may;
# placed on a quarter of one. Not cpu=1.0: that is also a limit, a CFS quota
# of one core over the loop's thread, FastAPI's pool thread and the channel's,
# which bare uvicorn does not have. Nor a bigger request: the request is a
# container's CPU weight only among its node's other containers (runc nests
# them in /thaw/<node>/, which as a whole weighs as the node's cores against
# the gateway, NATS and this client: ``cgroup_weight``), and two whole cores
# could not be placed beside the other benches' containers. cpu=(1.0, 2.0)
# measured the same requests/s ratio as this (when /thaw still weighed as one
# process).
@app.function(min_containers=2, max_containers=2, cpu=(0.25, 2.0))
@modal.concurrent(max_inputs=64)
@modal.fastapi_endpoint(method="POST")
def endpoint(request: dict) -> dict:
    return predict(request)


def bare_app():
    from fastapi import FastAPI

    bare = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    bare.add_api_route("/", predict, methods=["POST"])
    return bare
