"""Output formats of the report: one module per format in this package, each registering an OutputFormat.

A format turns the Document (document.py) into the text or bytes of one file next to the report. Every module
of this package is imported the first time the formats are asked for, so adding an output is adding a module:

    # render/json.py
    from llmd_bench.report.render import OutputFormat, register

    register(OutputFormat("json", "report.json", lambda document, report: ...))

A format from elsewhere (a plugin, a test) registers the same way once its module is imported. Formats that
render with Jinja2 use _jinja.py (templates in plugins/llmd_bench/report/templates/).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmd_bench.report.analysis import Report
    from llmd_bench.report.document import Document


@dataclass(frozen=True)
class OutputFormat:
    name: str
    filename: str  # in the report's folder
    render: Callable[[Document, Report], str | bytes]


_FORMATS: dict[str, OutputFormat] = {}
_discovered = False


def register(fmt: OutputFormat) -> OutputFormat:
    """Add an output format; each name and each file name once."""
    for other in _FORMATS.values():
        if other.name != fmt.name and other.filename == fmt.filename:
            raise ValueError(f"output format {fmt.name!r}: {fmt.filename} is already written by {other.name!r}")
    if fmt.name in _FORMATS and _FORMATS[fmt.name] != fmt:
        raise ValueError(f"output format {fmt.name!r} is already registered")
    _FORMATS[fmt.name] = fmt
    return fmt


def unregister(name: str) -> None:
    _FORMATS.pop(name, None)


def formats() -> list[OutputFormat]:
    """Every registered output format, this package's modules first (imported on the first call)."""
    global _discovered
    if not _discovered:
        for module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
            importlib.import_module(f"{__name__}.{module}")
        _discovered = True
    return list(_FORMATS.values())
