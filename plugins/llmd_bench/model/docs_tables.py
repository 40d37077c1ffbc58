"""The generated tables of the documentation: the environment variables in docs/settings.md (from `Settings`,
settings.markdown_table) and the run params in docs/params.md (from `RunParams`, params_table). Each sits in its
page between `<!-- NAME-table:start -->` and `<!-- NAME-table:end -->`.

    python -m llmd_bench.model.docs_tables           # rewrite the tables in docs/
    python -m llmd_bench.model.docs_tables --check   # exit 1 naming every page whose table differs from the code

tests/{unit,integration}/test_settings.py and tests/unit/test_docs.py fail when a page is stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llmd_bench.model import settings
from llmd_bench.model.campaign import Campaign, FromCampaign, Workload
from llmd_bench.model.params import RunParams

DOCS = settings.CHECKOUT / "docs"
# Campaign properties a run param defaults to, as a campaign file states them.
_PROPERTIES = {"model_names": "`models` (every model)", "factor_values": "`factors` (every value)"}
# Defaults a validator computes (Campaign._default_baseline), which the field's own default does not show.
_COMPUTED = {"baseline": "`no-offload` when the campaign benchmarks it, else its first config"}


def _accepts(schema: dict[str, Any]) -> str:
    """What a JSON-schema property accepts, in words."""
    if "anyOf" in schema:
        return " or ".join(_accepts(alternative) for alternative in schema["anyOf"])
    if "enum" in schema:
        return ", ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type")
    if kind == "null":
        return "empty"
    if kind == "array":
        unique = ", unique" if schema.get("uniqueItems") else ""
        return f"list of {_accepts(schema['items'])} (at least {schema.get('minItems', 0)}{unique})"
    if kind == "object":
        return "object: factor -> list of its values"
    if kind == "string" and schema.get("pattern") == r"^[1-9][0-9]*x$":
        return "`Nx`"
    words = {"integer": "integer", "number": "number", "string": "string"}.get(str(kind), str(kind))
    limits = [f"> {schema['exclusiveMinimum']}" if "exclusiveMinimum" in schema else "",
              f">= {schema['minimum']}" if "minimum" in schema else "",
              f"<= {schema['maximum']}" if "maximum" in schema else "",
              f"matching `{schema['pattern']}`" if "pattern" in schema else ""]
    shown = ", ".join(limit for limit in limits if limit)
    return f"{words} {shown}".strip().replace("string matching", "name matching")


def _campaign_path(name: str) -> str:
    """Where in a campaign file a run param's default lives (params.default_params reads the same)."""
    marks = [m for m in RunParams.model_fields[name].metadata if isinstance(m, FromCampaign)]
    if marks:
        return marks[0].path
    return f"workload.{name}" if name in Workload.model_fields else name


def _campaign_default(path: str) -> str:
    """The campaign key a param defaults to, with the key's own default when the file may leave it out."""
    if path in _PROPERTIES:
        return _PROPERTIES[path]
    model: type[BaseModel] = Campaign
    parts = path.split(".")
    for part in parts[:-1]:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise ValueError(f"campaign path {path!r}: {part} is not a section of the campaign file")
        model = annotation
    field = model.model_fields[parts[-1]]  # a KeyError here: FromCampaign names a key the campaign lacks
    shown = f"`{path}`"
    if parts[-1] in _COMPUTED and model is Campaign:
        return f"{shown} (default {_COMPUTED[parts[-1]]})"
    if field.is_required():
        return f"{shown} (required)"
    default = "empty" if field.default is None else f"`{field.default}`"
    return f"{shown} (default {default})"


def params_table() -> str:
    """docs/params.md's table: every run param in trigger-form order, what it accepts, the campaign key its
    default comes from, and its description (the trigger form shows the same)."""
    properties = RunParams.model_json_schema()["properties"]
    lines = ["| Param | Accepts | Default: the campaign's | What it does |", "|---|---|---|---|"]
    for name in RunParams.model_fields:
        schema = properties[name]
        description = str(schema.get("description", "")).replace("|", "\\|")
        lines.append(f"| `{name}` | {_accepts(schema)} | {_campaign_default(_campaign_path(name))} | {description} |")
    return "\n".join(lines) + "\n"


# page -> (marker name, the function that writes the table)
TABLES: dict[str, tuple[str, Callable[[], str]]] = {
    "settings.md": ("settings", settings.markdown_table),
    "params.md": ("params", params_table),
}


def marked(text: str, marker: str) -> str | None:
    """The text between a page's `<!-- MARKER-table:start -->` and `<!-- MARKER-table:end -->` lines."""
    found = re.search(rf"<!-- {marker}-table:start -->\n(.*?)<!-- {marker}-table:end -->", text, re.S)
    return found.group(1) if found else None


def stale(docs: Path = DOCS) -> list[str]:
    """The pages whose generated table is missing or differs from the code."""
    out = []
    for page, (marker, table) in TABLES.items():
        path = docs / page
        if not path.is_file() or marked(path.read_text(), marker) != table():
            out.append(str(path))
    return out


def write(docs: Path = DOCS) -> list[str]:
    """Rewrite every table in place; a page without its markers is an error naming it (nothing is written)."""
    updates = {}
    for page, (marker, table) in TABLES.items():
        path = docs / page
        text = path.read_text() if path.is_file() else ""
        if marked(text, marker) is None:
            raise SystemExit(f"{path}: no `<!-- {marker}-table:start -->` ... `<!-- {marker}-table:end -->` lines "
                             "to put the generated table between")
        start, end = text.index(f"<!-- {marker}-table:start -->\n"), text.index(f"<!-- {marker}-table:end -->")
        new = text[:start] + f"<!-- {marker}-table:start -->\n" + table() + text[end:]
        if new != text:
            updates[path] = new
    for path, new in updates.items():
        path.write_text(new)
    return [str(p) for p in updates]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmd_bench.model.docs_tables", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a table is stale")
    args = parser.parse_args(argv)
    if args.check:
        out = stale()
        for path in out:
            print(f"{path}: generated table differs from the code; run `python -m llmd_bench.model.docs_tables`")
        return 1 if out else 0
    for path in write():
        print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
