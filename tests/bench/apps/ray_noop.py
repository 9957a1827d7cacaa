"""Ray's side of the invocation bench, run by the Ray venv's python.

The same work as bench_noop.py, on a local Ray cluster of this machine's
cores: a no-op task's round trip (``ray.get(echo.remote(i))``) one at a
time, then ``n`` no-op tasks submitted at once and gathered (what ``.map``
does). Prints one JSON object: the round trips in ms and the tasks/s.
"""

import json
import sys
import time

import ray


def main(round_trips: int, map_inputs: int) -> None:
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)

    @ray.remote
    def echo(x):
        return x

    for i in range(50):  # warm: workers up, the function exported
        assert ray.get(echo.remote(i)) == i
    samples = []
    for i in range(round_trips):
        t = time.perf_counter()
        ray.get(echo.remote(i))
        samples.append((time.perf_counter() - t) * 1000)
    ray.get([echo.remote(i) for i in range(200)])  # warm
    t = time.perf_counter()
    assert ray.get([echo.remote(i) for i in range(map_inputs)]) == list(range(map_inputs))
    per_s = map_inputs / (time.perf_counter() - t)
    print(json.dumps({"version": ray.__version__, "round_trips_ms": samples, "per_s": per_s}))
    ray.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
