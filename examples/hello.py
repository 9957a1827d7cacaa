"""A first thaw app: `thaw deploy examples/hello.py`, `thaw run examples/hello.py::main`."""

import thaw as modal

app = modal.App("hello")


@app.function()
def square(x: int) -> int:
    print(f"squaring {x}")
    return x * x


@app.cls()
class Greeter:
    greeting: str = modal.parameter(default="hello")

    @modal.enter()
    def load(self):
        self.punctuation = "!"

    @modal.method()
    def greet(self, name: str) -> str:
        return f"{self.greeting}, {name}{self.punctuation}"


@app.local_entrypoint()
def main(n: int = 10):
    print("squares:", list(square.map(range(n))))
    print(Greeter().greet.remote("thaw"))
