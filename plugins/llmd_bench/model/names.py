"""Kubernetes name and label rules, shared by the step pods and the cell manifests (no heavy imports)."""

from __future__ import annotations

import hashlib
import re

_DNS = re.compile(r"[^a-z0-9-]+")
_LABEL = re.compile(r"[^A-Za-z0-9._-]+")


def dns_label(value: str, limit: int = 63) -> str:
    """A valid DNS-1123 label for any model/config name; long names keep a hash for uniqueness."""
    label = _DNS.sub("-", value.lower()).strip("-") or "x"
    if len(label) > limit:
        digest = hashlib.sha256(value.encode()).hexdigest()[:8]
        label = label[: limit - 9].rstrip("-") + "-" + digest
    return label


def label_value(value: str) -> str:
    """A valid label value (<= 63 chars, alphanumerics, '-', '_', '.')."""
    v = _LABEL.sub("-", value)[:63].strip("-_.")
    return v or "none"
