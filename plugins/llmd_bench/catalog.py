"""The llm-d version catalog (include/versions.yaml): images and vLLM version per llm-d version."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from llmd_bench import paths
from llmd_bench.errors import CampaignError


class VersionEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    vllm_version: str
    images: dict[str, str]
    kv_index_inmemory_default: bool = False


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> dict[str, VersionEntry]:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    try:
        return {str(k): VersionEntry.model_validate(v) for k, v in (raw.get("versions") or {}).items()}
    except ValidationError as exc:
        raise CampaignError(f"version catalog {path}: {exc}") from None


def load_catalog(path: Path | None = None) -> dict[str, VersionEntry]:
    path = path or paths.catalog_file()
    if not path.exists():
        raise CampaignError(f"version catalog {path}: not found")
    return _load(str(path), path.stat().st_mtime)


def known_versions() -> list[str]:
    return list(load_catalog())


def entry(version: str) -> VersionEntry:
    catalog = load_catalog()
    if version not in catalog:
        raise CampaignError(f"llm-d version {version!r} is not in the version catalog; known: {list(catalog)}")
    return catalog[version]
