"""The params of one run (the Airflow trigger form / dag_run.conf): RunParams, resolved against a campaign so an unknown
model or config is refused with the allowed values; their defaults and the trigger form's JSON schema."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
)

from llmd_bench.model import catalog, configurations
from llmd_bench.model.campaign import (
    DEFAULT_BASELINE,
    DEFAULT_NOISE_FLOOR_PCT,
    Baseline,
    Campaign,
    Cell,
    DesignParam,
    FromCampaign,
    ModelSpec,
    NoiseFloorPct,
    PercentileLimits,
    PositiveInt,
    Slo,
    SloParam,
    SweepParam,
    TrialIsolationParam,
    Trials,
    _Selection,
    _WorkloadParams,
)
from llmd_bench.model.errors import ParamsError


class RunParams(_WorkloadParams, _Selection):
    """The params of one run, resolved against the campaign (trigger form values). The one definition of the
    run params: the trigger form's schema (params_json_schema) and defaults (default_params) derive from it."""

    tensor_parallel_size: Annotated[PositiveInt, Field(description="vLLM tensor parallel size (GPUs per replica)."),
                                    FromCampaign("serving.tensor_parallel_size")]
    replicas: Annotated[PositiveInt, Field(description="Model server replicas per cell (routing needs more than one)."),
                        FromCampaign("serving.replicas")]
    llmd_version: Annotated[str, Field(description="llm-d version from the version catalog."),
                            FromCampaign("serving.llmd_version")]
    trials: Trials
    trial_isolation: TrialIsolationParam = "redeploy"
    noise_floor_pct: NoiseFloorPct = DEFAULT_NOISE_FLOOR_PCT
    baseline: Baseline = DEFAULT_BASELINE
    # factor -> the values to run (narrows the campaign's factors; a factor left out runs all its values)
    factors: Annotated[dict[str, list[Any]], Field(description="Factor values to run, narrowing the campaign's. A "
                                                   "factor left out runs all its values."),
                       FromCampaign("factor_values")] = {}
    sweep: SweepParam = "grid"
    slo: SloParam = Slo()
    design: DesignParam = "auto"

    @property
    def expected_level_s(self) -> float | None:
        """How long a level must last to be valid: duration_s, or nothing when a request cap may end it sooner."""
        return None if self.max_requests is not None else self.duration_s

    def selects(self, cell: Cell) -> bool:
        return (cell.model in self.models and cell.config in self.configs
                and all(value in self.factors.get(name, [value]) for name, value in cell.factors))

    def for_cell(self, cell: Cell | None) -> RunParams:
        """These params as one cell runs them: its replicas and tensor_parallel_size factors applied."""
        if cell is None:
            return self
        update = {name: value for name, value in cell.factors if name in ("replicas", "tensor_parallel_size")}
        return self.model_copy(update=update) if update else self

    def levels_for(self, model: ModelSpec) -> list[int]:
        levels = sorted(set(self.concurrency))
        if model.max_concurrency is not None:
            levels = [c for c in levels if c <= model.max_concurrency]
        return levels


def stored_params(campaign: Campaign, params: RunParams) -> dict[str, Any]:
    """A run's params as stored with it (runs.params): the params, plus the campaign settings the report states that
    are not params (the warm-up, the GPU-hour cost). The one definition: the steps store it, plan and the seeded
    sweep look history up with it."""
    return {**params.model_dump(), "warmup_requests": campaign.workload.warmup_requests,
            "gpu_hour_cost": campaign.gpu_hour_cost}


def selected_cells(campaign: Campaign, conf: dict[str, Any] | None, known_versions: list[str] | None = None) -> list[Cell]:
    """The campaign's cells this run's params select, in campaign order (bad params raise as in resolve_params)."""
    params = resolve_params(campaign, conf, known_versions)
    return [cell for cell in campaign.cells() if params.selects(cell)]


def resolve_params(campaign: Campaign, conf: dict[str, Any] | None, known_versions: list[str] | None = None) -> RunParams:
    """Merge trigger conf over campaign defaults and validate; errors name the param and allowed values."""
    conf = dict(conf or {})
    defaults = default_params(campaign)
    unknown = sorted(set(conf) - set(defaults))
    if unknown:
        raise ParamsError(f"unknown param(s) {unknown}; allowed params: {sorted(defaults)}")
    merged = {**defaults, **{k: v for k, v in conf.items() if v is not None}}
    for key in ("models", "configs", "concurrency"):
        if isinstance(merged[key], (str, int)) and not isinstance(merged[key], bool):
            merged[key] = [merged[key]]
    try:
        params = RunParams.model_validate(merged)
    except ValidationError as exc:
        msgs = []
        for e in exc.errors():
            if not e["loc"]:  # a rule across params (the method's)
                msgs.append(f"params: {e['msg'].removeprefix('Value error, ')}")
                continue
            field = str(e["loc"][0])
            allowed = _allowed_values(campaign, field, known_versions)
            msgs.append(f"param `{field}`: {e['msg']} (got {merged.get(field)!r}){'; allowed: ' + allowed if allowed else ''}")
        raise ParamsError("; ".join(msgs)) from None
    bad_models = [m for m in params.models if m not in campaign.model_names]
    if bad_models:
        raise ParamsError(f"param `models`: unknown model(s) {bad_models}; allowed: {campaign.model_names}")
    bad_configs = [c for c in params.configs if c not in campaign.configs]
    if bad_configs:
        raise ParamsError(f"param `configs`: config(s) {bad_configs} not in this campaign; allowed: {list(campaign.configs)}")
    for name, values in params.factors.items():
        factor_values = campaign.factors.values(name)
        if name not in campaign.factors.declared():
            raise ParamsError(f"param `factors`: {name!r} is not a factor of campaign {campaign.dag_id}; "
                              f"its factors: {campaign.factors.declared() or 'none'}")
        bad = [v for v in values if v not in factor_values]
        if bad or not values:
            raise ParamsError(f"param `factors`: {name} values {bad or values} are not in the campaign's {factor_values}")
    if params.baseline not in campaign.configs:
        raise ParamsError(f"param `baseline`: {params.baseline!r} is not in this campaign; allowed: {list(campaign.configs)}")
    if known_versions is not None and params.llmd_version not in known_versions:
        raise ParamsError(f"param `llmd_version`: {params.llmd_version!r} is not in the version catalog; "
                          f"allowed: {known_versions}")
    existing = campaign.serving.existing if campaign.serving.mode == "existing" else None
    if existing is not None and existing.read_only:
        restarts = [f"{name}: {value}" for name, value, needs in (
            ("level_isolation", params.level_isolation, params.level_isolation == "restart"),
            ("trial_isolation", params.trial_isolation, params.trial_isolation == "redeploy" and params.trials > 1))
            if needs]
        if restarts:
            raise ParamsError(f"param {', '.join(restarts)}: serving.existing.read_only restarts nothing; use "
                              "trial_isolation: same-server and level_isolation: none (or reset, where allowed)")
    if params.level_isolation == "reset" and known_versions is not None:
        refused = reset_refusals(campaign, params)
        if refused:
            raise ParamsError("param `level_isolation`: reset cannot empty every cache of "
                              + "; ".join(f"{config} ({'; '.join(why)})" for config, why in refused.items())
                              + ": use level_isolation: restart, or leave these configurations out")
    for model in params.models:
        spec = campaign.model(model)
        if not params.levels_for(spec):
            raise ParamsError(
                f"param `concurrency`: no level of {params.concurrency} is within {spec.short_name}'s "
                f"max_concurrency {spec.max_concurrency}"
            )
    return params


def reset_refusals(campaign: Campaign, params: RunParams) -> dict[str, list[str]]:
    """configuration -> why level_isolation: reset cannot empty its caches at params.llmd_version."""

    contract = catalog.entry(params.llmd_version).contract
    out: dict[str, list[str]] = {}
    for cell in campaign.cells():
        if params.selects(cell) and cell.config not in out:
            why = configurations.cache_reset_refusals(campaign.cell_configuration(cell), contract, campaign.serving.backend,
                                       params.llmd_version)
            if why:
                out[cell.config] = why
    return out


def default_params(campaign: Campaign) -> dict[str, Any]:
    """Every run param's default: the campaign value each RunParams field names (FromCampaign), its
    `workload:` value for the workload fields, else the campaign's same-named setting."""
    def source(name: str) -> str:
        marks = [m for m in RunParams.model_fields[name].metadata if isinstance(m, FromCampaign)]
        if marks:
            return marks[0].path
        return f"workload.{name}" if name in _WorkloadParams.model_fields else name

    def resolve(path: str) -> Any:
        value: Any = campaign
        for attr in path.split("."):
            value = getattr(value, attr)
        if isinstance(value, BaseModel):  # a block (slo): its JSON, only the keys set
            return value.model_dump(mode="json", exclude_none=True)
        return list(value) if isinstance(value, (list, tuple)) else value

    return {name: resolve(source(name)) for name in RunParams.model_fields}


def params_json_schema(campaign: Campaign, known_versions: list[str]) -> dict[str, dict[str, Any]]:
    """JSON schema per param for the Airflow trigger form (validated at trigger time), in form order: derived
    from RunParams, with this campaign's models, configurations, versions and factors as the allowed values."""
    properties = RunParams.model_json_schema()["properties"]
    schema = {name: _form_schema(properties[name]) for name in RunParams.model_fields}
    choices: dict[str, list[Any]] = {"models": campaign.model_names, "configs": list(campaign.configs),
                                     "baseline": list(campaign.configs), "llmd_version": known_versions}
    for name, allowed in choices.items():
        field = schema[name]
        if field.get("type") == "array":
            field.update(items={**field["items"], "enum": allowed}, examples=allowed)
        else:
            field["enum"] = allowed
        field["description"] += f" Allowed: {', '.join(allowed)}."
    declared = campaign.factor_values
    schema["factors"] = {
        "type": "object", "additionalProperties": False,
        "properties": {name: {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": values}}
                       for name, values in declared.items()},
        "description": schema["factors"]["description"] + " This campaign's: "
        + ("; ".join(f"{name} {values}" for name, values in declared.items()) or "none") + ".",
    }
    # slo: an object of metric -> percentile -> ms (campaign.Slo), spelled out for the form
    percentiles = {p: {"type": "number", "exclusiveMinimum": 0} for p in PercentileLimits.model_fields}
    schema["slo"] = {"type": "object", "additionalProperties": False, "description": schema["slo"]["description"],
                     "properties": {m: {"type": "object", "additionalProperties": False, "properties": percentiles}
                                    for m in Slo.model_fields}}
    return schema


def _form_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """Pydantic's JSON schema of one field as Airflow's trigger form renders it: no title or default (the
    Param carries the default), a union of plain types as a type list, integer limits as inclusive minimums."""
    out = {k: v for k, v in prop.items() if k not in ("title", "default")}
    if "anyOf" in out:
        merged: dict[str, Any] = {"type": []}
        for alternative in out.pop("anyOf"):
            merged["type"].append(alternative["type"])
            merged.update({k: v for k, v in _form_schema(alternative).items() if k != "type"})
        out = {**merged, **out}
    if out.get("type") == "integer" or (isinstance(out.get("type"), list) and "integer" in out["type"]):
        if "exclusiveMinimum" in out:
            out["minimum"] = out.pop("exclusiveMinimum") + 1
    if isinstance(out.get("items"), dict):
        out["items"] = _form_schema(out["items"])
    return out


def _allowed_values(campaign: Campaign, field: str, known_versions: list[str] | None) -> str:
    """What a param accepts, for an error message: its allowed values, else its description."""
    if field not in RunParams.model_fields:
        return ""
    schema = params_json_schema(campaign, known_versions or [])[field]
    if field == "factors":
        return str(campaign.factor_values)
    if field == "slo":
        return f"{{{' | '.join(Slo.model_fields)}: {{{' | '.join(PercentileLimits.model_fields)}: ms > 0}}}}"
    enum = schema.get("enum") or schema.get("items", {}).get("enum")
    if enum and (field != "llmd_version" or known_versions):
        return str(list(enum))
    return str(schema["description"]).split(" Allowed:")[0]


def default_and_schema(campaign: Campaign, known_versions: list[str]) -> dict[str, tuple[Any, dict[str, Any]]]:
    defaults = default_params(campaign)
    return {k: (defaults[k], schema) for k, schema in params_json_schema(campaign, known_versions).items()}
