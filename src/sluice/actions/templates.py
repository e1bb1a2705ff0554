"""Payload templates: Jinja2 in a sandbox, compiled once, rendered per fired row."""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from sluice.core.errors import ConfigError

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


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
                return _ENV.from_string(spec)
            except TemplateError as exc:
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
        except TemplateError as exc:
            raise TemplateRenderError(
                f"{self.what} template error: {type(exc).__name__}: {exc}"
            ) from None
        except Exception as exc:  # user templates may raise anything
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
