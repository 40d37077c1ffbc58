"""The Jinja2 environment of the report's templates (plugins/llmd_bench/report/templates/): HTML templates
(*.html.j2) autoescape, the others do not. Filters: `inline` (escaped text, `**bold**` as <strong>) and `text`
(escaped text), both escaping as html.escape does."""

from __future__ import annotations

import html
from functools import lru_cache
from pathlib import Path

from markupsafe import Markup

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def _text(value: str):

    return Markup(html.escape(value))


def _inline(value: str):

    parts = html.escape(value).split("**")
    return Markup("".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts)))


@lru_cache(maxsize=1)
def environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape  # deferred: loads jinja2

    env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
                      autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False,
                                                   default=False))
    env.filters.update(inline=_inline, text=_text)
    return env


def render(template: str, **context: object) -> str:
    return environment().get_template(template).render(**context)
