"""URL rules compiled once per session rather than once per app.

Every test makes an app, and werkzeug compiles each URL rule's builders (Python source made with `ast`
and `compile`) as the app registers it: nine tenths of `create_app()`. The builder of a rule is a
function of the rule's text, its parsed parts, its defaults and `append_unknown` alone (it reaches the
rule's converters through the `self` it is bound to), so the tests share the one compiled for the same
rule. Production is untouched: one app per process compiles its rules once anyway.
"""

from __future__ import annotations

from werkzeug.routing.rules import Rule

_compile_builder = Rule._compile_builder
_builders: dict[tuple, object] = {}


def _cached_builder(self: Rule, append_unknown: bool = True):
    defaults = self.defaults or {}
    converters = tuple(sorted((name, type(c).__qualname__) for name, c in self._converters.items()))
    key = (
        self.rule,
        tuple(self._trace),
        tuple(sorted((name, repr(value)) for name, value in defaults.items())),
        converters,
        append_unknown,
    )
    if key not in _builders:
        _builders[key] = _compile_builder(self, append_unknown)
    return _builders[key]


def compile_rules_once() -> None:
    """Share compiled URL builders between the apps of this process."""
    Rule._compile_builder = _cached_builder  # type: ignore[method-assign]
