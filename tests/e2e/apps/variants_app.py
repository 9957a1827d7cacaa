"""Functions whose with_options variants the e2e test calls: each returns its
container's /proc/self/cgroup, so the test finds the cgroup it ran in."""

import thaw

app = thaw.App("variants")


def _cgroup() -> str:
    with open("/proc/self/cgroup") as f:
        return f.read()


# A long scaledown window: the container is still there when the test reads its cgroup.
@app.function(cpu=0.25, memory=256, scaledown_window=600)
def where() -> str:
    return _cgroup()


@app.cls(cpu=0.25, memory=256, scaledown_window=600)
class Probe:
    @thaw.method()
    def where(self) -> str:
        return _cgroup()


@app.function()
def spare() -> None:
    pass
