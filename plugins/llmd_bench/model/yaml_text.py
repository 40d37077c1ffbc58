"""YAML parsing for every file and manifest the package reads: PyYAML's safe loader, in its libyaml (C) build.

The pure-Python SafeLoader was a third of the CPU of loading a campaign and of rendering a cell's manifests;
libyaml's CSafeLoader builds the same objects several times faster (PyYAML 6.0.4 wheels include it; where a build
lacks libyaml the pure-Python loader is used). Errors are yaml.YAMLError either way.
"""

from __future__ import annotations

from typing import Any

import yaml

_LOADER: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(text: str) -> Any:
    """One YAML document (None when the text is empty), as yaml.safe_load."""
    return yaml.load(text, Loader=_LOADER)


def load_all(text: str) -> list[Any]:
    """Every document of a multi-document text, as list(yaml.safe_load_all)."""
    return list(yaml.load_all(text, Loader=_LOADER))
