"""The one format of every part's catalogue: its common mistakes and its other correct implementations.

A part's catalogue file (tools/mistakes.py, mistakes_conditional.py, energy_mistakes.py), named by the
`mistakes` of its row in tools/autograder/parts.py, makes `BOOK = Catalogue(TheSolutionClass)` and
registers, with decorators,
- mistakes: a wrong version of one function each. `detect` says how the tests recognise it: "output"
  (the reference builder stores its output on each case, and a student whose output equals it is told
  `title` and `why`), or anything else (a check catches it, and its message contains `expect`);
- alternatives: correct implementations in other styles, which must pass every test: one function
  (`@alternative(name, function)`), or a whole subclass of the solution (`@alternative_class`).
The reference builder (tools/make_reference.py), tools/class_mistakes.py and the fairness tests
(tests/test_fairness.py) read every part's catalogue alike, through `load`.
"""

from __future__ import annotations

import importlib
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
        self.alternatives: dict[str, dict | type] = {}  # name -> {function: method}, or a whole subclass of base

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

    def alternative_class(self, cls: type) -> type:
        """Class decorator: a subclass of base, written whole (its own helpers, `super()` calls), is one
        alternative, named after the class."""
        if not issubclass(cls, self.base) or cls.__name__ in self.alternatives:
            raise ValueError(f"alternative {cls.__name__}: needs a new name and {self.base.__name__} as its base")
        self.alternatives[cls.__name__] = cls
        return cls

    def alternative_classes(self) -> list[type]:
        """Each alternative as a class, in name order."""
        return [methods if isinstance(methods, type) else type(name, (self.base,), dict(methods))
                for name, methods in sorted(self.alternatives.items())]


def load(module: str) -> Catalogue:
    """The catalogue (`BOOK`) of the module a part's row names, e.g. "tools.energy_mistakes"."""
    return importlib.import_module(module).BOOK
