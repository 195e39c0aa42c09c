"""The one format of every part's catalogue: its common mistakes and its other correct implementations.

A part's catalogue file (tools/mistakes.py, mistakes_conditional.py, energy_mistakes.py) makes a
`Catalogue` of its solution class and registers, with decorators,
- mistakes: a wrong version of one function each. `detect` says how the tests recognise it: "output"
  (the reference builder stores its output on each case, and a student whose output equals it is told
  `title` and `why`), or anything else (a check catches it, and its message contains `expect`);
- alternatives: correct implementations in other styles, which must pass every test.
The reference builder (tools/make_reference.py) and the fairness tests read `mistakes` and
`alternatives` of each part alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Mistake:
    key: str  # "<function>.<name>"
    function: str  # the function the mistake is in
    title: str
    why: str
    methods: dict  # function -> the wrong method (some mistakes span helpers)
    detect: str = "output"
    expect: str = ""
    base: type = object  # the solution class the mistake is made in

    def make_class(self) -> type:
        """The solution class with this mistake."""
        return type(f"Mistake_{self.key.replace('.', '_')}", (self.base,), dict(self.methods))


class Catalogue:
    """A part's mistakes and alternatives, made on its solution class `base`."""

    def __init__(self, base: type):
        self.base = base
        self.mistakes: list[Mistake] = []
        self.alternatives: dict[str, dict] = {}  # name -> {function: method}

    def add(self, key: str, function: str, title: str, why: str, methods: dict, detect: str = "output",
            expect: str = "") -> Mistake:
        mistake = Mistake(key, function, title, why, methods, detect, expect, self.base)
        self.mistakes.append(mistake)
        return mistake

    def mistake(self, key: str, function: str, title: str, why: str, detect: str = "output", expect: str = "") -> Callable:
        """Decorator: the method is `function` written with this mistake."""
        def register(method):
            self.add(key, function, title, why, {function: method}, detect, expect)
            return method
        return register

    def alternative(self, name: str, function: str) -> Callable:
        """Decorator: the method is a correct `function` of the alternative implementation `name`."""
        def register(method):
            self.alternatives.setdefault(name, {})[function] = method
            return method
        return register

    def alternative_classes(self) -> list[type]:
        """Each alternative as a class, in name order."""
        return [type(name, (self.base,), dict(methods)) for name, methods in sorted(self.alternatives.items())]
