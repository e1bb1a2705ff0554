"""Payload templates: Jinja2 in a sandbox, compiled once, rendered per fired row.

Jinja2 is imported with the first template (about 0.1 s): rules without one never load it.
"""

from __future__ import annotations

import functools
from typing import Any

from sluice.core.errors import ConfigError


@functools.cache
def _env() -> Any:
    """The sandboxed Jinja2 environment (strict about undefined names, no escaping)."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def _template_error() -> type[Exception]:
    from jinja2 import TemplateError

    return TemplateError


class TemplateRenderError(Exception):
    """A template failed for one row (the action record is failed with this reason)."""


class PayloadTemplate:
    """A JSON-like structure whose strings are Jinja2 templates (or None: the default)."""

    def __init__(self, spec: Any, action: str, what: str = "payload") -> None:
        self.spec = spec
        self.action, self.what = action, what
        self._compiled = self._compile(spec)

    def _compile(self, spec: Any) -> Any:
        if isinstance(spec, str):
            try:
                return _env().from_string(spec)
            except _template_error() as exc:
                raise ConfigError(
                    f"action {self.action!r}: invalid {self.what} template: {exc}", key=self.what
                ) from None
        if isinstance(spec, dict):
            return {k: self._compile(v) for k, v in spec.items()}
        if isinstance(spec, list):
            return [self._compile(v) for v in spec]
        return spec

    def render(self, variables: dict[str, Any]) -> Any:
        """Render for one row; raise TemplateRenderError with a readable reason."""
        try:
            return self._render(self._compiled, variables)
        except Exception as exc:  # Jinja2's TemplateError, or anything a user template raises
            raise TemplateRenderError(
                f"{self.what} template error: {type(exc).__name__}: {exc}"
            ) from None

    def _render(self, node: Any, variables: dict[str, Any]) -> Any:
        if isinstance(node, dict):
            return {k: self._render(v, variables) for k, v in node.items()}
        if isinstance(node, list):
            return [self._render(v, variables) for v in node]
        if hasattr(node, "render"):
            return node.render(variables)
        return node
