"""`design: aba`: the baseline cell runs first and again last, so the run measures its own drift.

The campaign field and trigger param (campaign.Design) are `auto`, `single` or `aba`; `auto` is aba on a simulated
runtime (the local runtime shares its host with whatever else runs there, so its numbers drift) and single on a
cluster. Under aba every (model, stack factors) whose baseline cell the run selects gets a repeat of that cell
(RepeatCell): its own Airflow task group (`<baseline group>__repeat`), the last of its lane chain, its own cell folder
(`<config>__repeat`, so the first run's files stay as they were) and a record that names it the repeat.

How the repeat is stored: as further trials of the baseline cell (trial `trials + t` for the repeat's trial t), with
the baseline's model, configuration and factor labels. No new column, no new cell identity: every reader that
aggregates a cell's trials (the noise history, the cross-version and previous-run peaks) counts the repeat as one
more measurement of the baseline, which it is; a trial number above the run's `trials` is what marks it as the
repeat. The report keeps the repeat out of this run's peaks and comparisons and uses it for the baseline's drift
(report/drift.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from llmd_bench.model.campaign import Campaign, Cell
from llmd_bench.model.errors import ParamsError

Resolved = Literal["single", "aba"]
REPEAT = "repeat"  # the repeat's variant: its folder `<config>__repeat`, its group `<baseline group>__repeat`


def resolve(design: str | None, simulated: bool) -> Resolved:
    """The design a run uses: aba or single (auto: aba on a simulated runtime, single on a cluster). A run stored
    before the field existed (None) ran single."""
    if design in (None, "single"):
        return "single"
    if design == "aba":
        return "aba"
    if design == "auto":
        return "aba" if simulated else "single"
    raise ParamsError(f"design {design!r}: expected auto, single or aba")


@dataclass(frozen=True)
class RepeatCell(Cell):
    """The baseline cell's second run under design: aba. Its model, configuration and factors are the baseline
    cell's (the steps run the same stack and workload); its folder and task group are its own."""

    @property
    def variant(self) -> str:
        return "_".join(v for v in (super().variant, REPEAT) if v)

    @property
    def group_id(self) -> str:
        return f"{super().group_id}__{REPEAT}"

    @property
    def baseline(self) -> Cell:
        return Cell(self.model, self.config, self.factors)

    def __str__(self) -> str:
        return f"{super().__str__()} (repeat)"


def repeat_of(cell: Cell, baseline: str) -> RepeatCell:
    """The repeat of `cell`, which must be the run's baseline cell (the step CLI's --repeat)."""
    if cell.config != baseline:
        raise ParamsError(f"--repeat: only the baseline cell repeats under design: aba; {cell.config!r} is not the "
                          f"run's baseline {baseline!r}")
    return RepeatCell(cell.model, cell.config, cell.factors)


def repeat_cells(campaign: Campaign, baseline: str | None = None) -> list[RepeatCell]:
    """Every repeat a run of the campaign may have: one per baseline cell (model x stack factors), in campaign
    order."""
    name = baseline or campaign.baseline
    return [RepeatCell(c.model, c.config, c.factors) for c in campaign.cells() if c.config == name]


def chosen_repeats(campaign: Campaign, selected: list[Cell], baseline: str, design: str,
                   simulated: bool) -> list[RepeatCell]:
    """The repeats this run runs: under aba, the repeat of each selected baseline cell; none under single."""
    if resolve(design, simulated) != "aba":
        return []
    return [RepeatCell(c.model, c.config, c.factors) for c in selected if c.config == baseline]


def stored_trial(trial: int, trials: int, cell: Cell) -> int:
    """The trial number a cell's trial is stored under: the repeat's trial t is the baseline's trial trials + t."""
    return trials + trial if isinstance(cell, RepeatCell) else trial


def is_repeat_trial(trial: int, trials: int) -> bool:
    """A stored trial of the baseline that the repeat measured (stored_trial)."""
    return trial > trials


def record_fields(cell: Cell | None, trials: int) -> dict[str, Any]:
    """What a repeat's record (cell.json) says about it; nothing for any other cell."""
    if not isinstance(cell, RepeatCell):
        return {}
    return {REPEAT: {"of": cell.baseline.group_id, "position": "last", "design": "aba",
                     "stored_as_trials": [stored_trial(t, trials, cell) for t in range(1, trials + 1)]}}
