"""Parse and validate GuideLLM benchmark reports (the JSON written by `guidellm run --output kind=json`).

Only the report layouts in llmd_bench.measure.guidellm_layouts are accepted (the pinned 0.8 line and the versions
past studies were written with); anything else is a ReportError naming what was found and what is supported.
A report may be zstd-compressed (`*.json.zst`, as past studies stored them). A level that parsed but cannot be
trusted (errors, stuck requests, too few successes, cut short) is kept with an `invalid_reason`; it is never
dropped or turned into a zero. A report holding numbers GuideLLM cannot have written (a negative or non-finite rate,
latency, token count or request count, percentiles out of order) is broken or edited, not a measurement: it is
refused whole, naming the file, the level and the field, before anything of it is stored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmd_bench.measure import guidellm_layouts
from llmd_bench.measure.guidellm_levels import Report, ValidityRules
from llmd_bench.model.errors import ReportError

DEFAULT_RULES = ValidityRules()  # frozen: one shared default


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name}")


# The first four bytes of a zstd frame (RFC 8878 section 3.1.1).
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _unzstd(data: bytes, path: Path) -> bytes:
    import zstandard  # deferred: only compressed reports need it

    if not data.startswith(_ZSTD_MAGIC):
        raise ReportError(f"GuideLLM report {path}: not zstd-compressed (a .zst name, but no zstd frame)")
    out = []
    try:
        while data:  # `zstd` may write several frames; they decompress to one text
            frame = zstandard.ZstdDecompressor().decompressobj()
            out.append(frame.decompress(data))
            # decompressobj returns what it could of a cut frame without complaint; eof says whether it ended
            if not frame.eof:
                raise ReportError(f"GuideLLM report {path}: zstd data ends mid-frame (truncated?)")
            data = frame.unused_data
    except zstandard.ZstdError as exc:
        raise ReportError(f"GuideLLM report {path}: not valid zstd data (truncated or corrupted?): {exc}") from None
    return b"".join(out)


def load_json(path: Path) -> Any:
    """A report file, plain (`.json`) or zstd-compressed (`.json.zst`)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ReportError(f"GuideLLM report {path}: not found") from None
    except IsADirectoryError:
        raise ReportError(f"GuideLLM report {path}: is a directory; give the report files (one per trial)") from None
    except PermissionError:
        raise ReportError(f"GuideLLM report {path}: not readable (permission denied)") from None
    if str(path).endswith(".zst") or data.startswith(_ZSTD_MAGIC):
        data = _unzstd(data, path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ReportError(f"GuideLLM report {path}: not a text file") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise ReportError(f"GuideLLM report {path}: not valid JSON (truncated or corrupted?): {exc}") from None


def parse_report_file(path: Path, *, expected_duration_s: float | None = None,
                      rules: ValidityRules = DEFAULT_RULES) -> Report:
    return parse_report(load_json(path), source=str(path), expected_duration_s=expected_duration_s, rules=rules)


def parse_report(doc: Any, *, source: str = "<report>", expected_duration_s: float | None = None,
                 rules: ValidityRules = DEFAULT_RULES) -> Report:
    """A report of any supported layout, by the adapter its version and layout id pick (guidellm_layouts)."""
    layout = guidellm_layouts.detect(doc, source)
    return layout.parse(doc, source=source, expected_duration_s=expected_duration_s, rules=rules)


