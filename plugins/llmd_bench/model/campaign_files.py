"""Campaign files: reading one (load_campaign, every error naming the file, the field and the reason), finding them
(campaign_files, find_campaign, campaign_configurations) and checking a set of them together (campaign_set_errors)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from pydantic import (
    ValidationError,
)

from llmd_bench.model import paths, yaml_text
from llmd_bench.model.campaign import Campaign
from llmd_bench.model.configurations import Configuration
from llmd_bench.model.errors import CampaignError


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"field `{loc}`: {e['msg']}")
    return "; ".join(lines)


def load_campaign(path: str | Path) -> Campaign:
    path = Path(path)
    try:
        raw = yaml_text.load(path.read_text())
    except FileNotFoundError:
        raise CampaignError(f"campaign file {path}: not found") from None
    except yaml.YAMLError as exc:
        raise CampaignError(f"campaign file {path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise CampaignError(f"campaign file {path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        campaign = Campaign.model_validate(raw)
    except ValidationError as exc:
        raise CampaignError(f"campaign file {path}: {_format_validation_error(exc)}") from None
    return campaign.model_copy(update={"source": str(path)})


def campaign_files(directory: Path | None = None) -> list[Path]:
    directory = directory or paths.campaigns_dir()
    return sorted(p for p in directory.glob("*.yaml") if not p.name.startswith("_"))


# Airflow's presets as cron expressions (airflow/sdk/definitions/timetables/_cron.py CRON_PRESETS,
# apache-airflow 3.3.2), to find when two campaigns fire together
CRON_PRESETS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *",
                "@quarterly": "0 0 1 */3 *", "@yearly": "0 0 1 1 *"}


def first_shared_fire_time(a: str | None, b: str | None, days: int = 366) -> datetime | None:
    """The first time within `days` at which both schedules fire, or None. Two campaigns that fire together
    get the same scheduled run id (scheduled__<that time>), so their runs would share results folders."""
    cron_a, cron_b = CRON_PRESETS.get(a or "", a), CRON_PRESETS.get(b or "", b)
    if not cron_a or not cron_b or cron_a.startswith("@") or cron_b.startswith("@"):
        return None  # unscheduled, @once, @continuous: no shared deterministic run id
    from croniter import croniter  # deferred: optional (it comes with Airflow; a step pod may not have it)

    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=days)
    it = croniter(cron_a, start - timedelta(seconds=1))
    for _ in range(20000):  # an hourly schedule over a year is 8,784 fire times
        t = it.get_next(datetime)
        if t >= end:
            return None
        if croniter.match(cron_b, t):
            return t
    return None


def campaign_set_errors(campaigns: list[tuple[Path, Campaign]]) -> dict[Path, str]:
    """Errors that only show across campaign files: a dag_id used twice (the later file would silently
    replace the earlier DAG), and schedules that fire at the same time (shared run ids and results folders).
    The later file (by name) gets the error; the earlier one stays usable."""
    errors: dict[Path, str] = {}
    for i, (path, campaign) in enumerate(campaigns):
        for other_path, other in campaigns[:i]:
            if other_path in errors:
                continue
            if campaign.dag_id == other.dag_id:
                errors[path] = (f"campaign file {path}: dag_id {campaign.dag_id!r} is already used by {other_path}; "
                                f"give this campaign its own dag_id")
                break
            shared = first_shared_fire_time(other.schedule, campaign.schedule)
            if shared is not None:
                errors[path] = (
                    f"campaign file {path}: schedule {campaign.schedule!r} fires at the same time as {other_path}'s "
                    f"({other.schedule!r}), first at {shared:%Y-%m-%d %H:%M} UTC: both runs would get the run id "
                    f"scheduled__{shared.isoformat()} and share results/<run id>/ and reports/<run id>/. "
                    f"Move one of them, e.g. schedule: '0 2 * * 0' instead of '@weekly'")
                break
    return errors


def campaign_configurations(dag_id: str) -> dict[str, Configuration]:
    """A campaign file's own configurations (besides the catalog's), found by dag id; {} when there is none."""
    for path in campaign_files():
        try:
            campaign = load_campaign(path)
        except CampaignError:
            continue
        if campaign.dag_id == dag_id:
            return dict(campaign.configurations)
    return {}


def find_campaign(name: str) -> Campaign:
    """A campaign by file stem (`kv_cache_eval`), dag id, or path."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return load_campaign(candidate)
    files = campaign_files()
    for f in files:
        if f.stem == name:
            return load_campaign(f)
    for f in files:
        c = load_campaign(f)
        if c.dag_id == name:
            return c
    raise CampaignError(f"campaign {name!r} not found in {paths.campaigns_dir()}; available: {[f.stem for f in files]}")
