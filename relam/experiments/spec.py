"""Experiment specs: one YAML file per paper table or figure, validated before anything runs.

A spec names the tasks (rows or panels), the methods with their settings (columns or curves), the
seeds, the budget of one run per suite and per *scale* (``smoke`` = CI minutes, ``quick`` = hours
on one 2-core machine, ``paper`` = the paper's budgets), the paper's numbers where the paper gives
them, and the claims the reproduction tests check. Validation is two-staged: pydantic checks the
structure (unknown keys and wrong types), then :func:`load_spec` checks the names against the
registries (tasks, methods, method settings, labels used by paper numbers and claims). Either
stage fails with a :class:`SpecError` naming the file, the field path and what was expected, so a
typo costs seconds rather than a half-finished sweep.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from relam.cache import REPO_ROOT
from relam.methods import Budget, MethodSettings, list_methods, policy_inputs, settings_model

__all__ = [
    "SCALES",
    "SUITES",
    "BestClaim",
    "CellClaim",
    "CloseClaim",
    "MethodEntry",
    "OrderingClaim",
    "Spec",
    "SpecError",
    "find_spec",
    "list_specs",
    "load_spec",
]

SCALES = ("smoke", "quick", "paper")
SUITES = ("metaworld", "maniskill")
SPEC_DIR = REPO_ROOT / "experiments"
Scale = Literal["smoke", "quick", "paper"]


class SpecError(ValueError):
    """A malformed experiment spec; the message names the file and the field path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PerScale(_Strict):
    """A number per scale; ``None`` means 'not checked at this scale'."""

    smoke: float | None = None
    quick: float | None = None
    paper: float | None = None

    def at(self, scale: str) -> float | None:
        return getattr(self, scale)


class SeedsPerScale(_Strict):
    smoke: list[int]
    quick: list[int]
    paper: list[int]


class BudgetsPerScale(_Strict):
    smoke: Budget
    quick: Budget
    paper: Budget


class MethodEntry(_Strict):
    """One column (or curve): a registered method with its settings, shown under ``label``."""

    label: str = Field(min_length=1)
    method: str
    settings: dict[str, Any] = Field(default_factory=dict)
    reference: bool = Field(default=False, description="a harness reference (not in the paper)")


class _ClaimBase(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.:+-]+$", description="short id used as the pytest id")
    text: str = Field(min_length=1, description="the paper's claim, in words")
    tasks: list[str] | None = Field(default=None, description="tasks it covers (None: all)")
    margin: PerScale = Field(default_factory=PerScale, description="slack, percentage points")


class OrderingClaim(_ClaimBase):
    """``better`` reaches a mean success >= each of ``than`` (minus the margin) on every task."""

    kind: Literal["ordering"]
    better: str
    than: list[str] = Field(min_length=1)


class BestClaim(_ClaimBase):
    """``best`` has the highest mean success among ``among`` (None: all labels) on every task."""

    kind: Literal["best"]
    best: str
    among: list[str] | None = None


class CloseClaim(_ClaimBase):
    """The two labels' mean successes differ by at most the margin on every task."""

    kind: Literal["close"]
    labels: list[str] = Field(min_length=2, max_length=2)


Claim = Annotated[Union[OrderingClaim, BestClaim, CloseClaim], Field(discriminator="kind")]


class CellClaim(_Strict):
    """Generated from the spec's paper numbers: one cell within the tolerance of the paper."""

    id: str
    text: str
    task: str
    label: str
    paper: float


class Spec(_Strict):
    """A validated experiment spec (see experiments/*.yaml for the fields in use)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    title: str
    description: str = ""
    report: Literal["table", "curves"]
    tasks: list[str] = Field(min_length=1)
    task_labels: dict[str, str] = Field(default_factory=dict)
    methods: list[MethodEntry] = Field(min_length=1)
    seeds: list[int] | SeedsPerScale
    budgets: dict[Literal["metaworld", "maniskill"], BudgetsPerScale]
    paper: dict[str, dict[str, float | None]] = Field(
        default_factory=dict, description="task -> label -> success rate in percent, as printed")
    paper_notes: str = ""
    tolerance: PerScale = Field(default_factory=PerScale,
                                description="allowed |ours - paper| per cell, percentage points")
    claims: list[Claim] = Field(default_factory=list)

    _path: Path | None = PrivateAttr(default=None)
    _suites: dict[str, str] = PrivateAttr(default_factory=dict)

    # -- accessors used by the runner and the reports ---------------------------------------
    @property
    def path(self) -> Path | None:
        return self._path

    def suite_of(self, task: str) -> str:
        return self._suites[task]

    def task_label(self, task: str) -> str:
        return self.task_labels.get(task, task)

    def labels(self) -> list[str]:
        return [m.label for m in self.methods]

    def entry(self, label: str) -> MethodEntry:
        for m in self.methods:
            if m.label == label:
                return m
        raise KeyError(label)

    def seeds_at(self, scale: str) -> list[int]:
        _check_scale(scale)
        return list(self.seeds) if isinstance(self.seeds, list) else list(getattr(self.seeds, scale))

    def budget(self, task: str, scale: str) -> Budget:
        _check_scale(scale)
        return getattr(self.budgets[self.suite_of(task)], scale)

    def resolved_settings(self, label: str) -> MethodSettings:
        e = self.entry(label)
        return settings_model(e.method)(**e.settings)

    def paper_value(self, task: str, label: str) -> float | None:
        return self.paper.get(task, {}).get(label)

    def cell_claims(self) -> list[CellClaim]:
        """One claim per paper number: 'label reaches the paper's success on task'."""
        out = []
        for task in self.tasks:
            for label in self.labels():
                v = self.paper_value(task, label)
                if v is not None:
                    out.append(CellClaim(
                        id=f"{task}/{label.replace(' ', '_')}",
                        text=f"{label} reaches {v:.1f}% success on {self.task_label(task)} ({self.name})",
                        task=task, label=label, paper=float(v)))
        return out


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top level>"


def _format_validation(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid experiment spec"]
    for e in err.errors():
        # union branches show up as tags in the path; they are noise for a spec author
        loc = tuple(p for p in e["loc"] if p not in ("list[int]", "SeedsPerScale"))
        got = e.get("input")
        got_s = "" if e["type"] == "missing" else f" (got {got!r})"
        if len(got_s) > 120:
            got_s = got_s[:117] + "...)"
        lines.append(f"  {_loc(loc)}: {e['msg']}{got_s}")
    return "\n".join(lines)


def _semantic_checks(spec: Spec, source: str) -> None:
    """Names that pydantic cannot know: tasks, methods, settings, labels."""
    from relam.tasks import get_task, list_tasks

    errors: list[str] = []
    known_tasks = list_tasks()
    suites: dict[str, str] = {}
    for i, t in enumerate(spec.tasks):
        if t not in known_tasks:
            errors.append(f"tasks[{i}]: unknown task {t!r}; expected one of {', '.join(known_tasks)}")
        else:
            suites[t] = get_task(t).suite
    if len(set(spec.tasks)) != len(spec.tasks):
        errors.append("tasks: duplicate task names")
    for t in spec.task_labels:
        if t not in spec.tasks:
            errors.append(f"task_labels.{t}: not one of the spec's tasks ({', '.join(spec.tasks)})")
    for suite in sorted(set(suites.values())):
        if suite not in spec.budgets:
            errors.append(f"budgets: missing budgets for suite {suite!r} (needed by its tasks); "
                          f"expected budgets.{suite}.{{smoke,quick,paper}}")

    known_methods = list_methods()
    labels = [m.label for m in spec.methods]
    for i, m in enumerate(spec.methods):
        if m.method not in known_methods:
            errors.append(f"methods[{i}].method: unknown method {m.method!r}; expected one of "
                          f"{', '.join(known_methods)}")
            continue
        try:
            settings_model(m.method)(**m.settings)
        except ValidationError as e:
            for d in e.errors():
                got = "" if d["type"] == "missing" else f" (got {d.get('input')!r})"
                errors.append(f"methods[{i}].settings.{_loc(d['loc'])}: {d['msg']}{got} "
                              f"[settings of method {m.method!r}]")
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        errors.append(f"methods: duplicate labels {dup}")
    # equal terms: every column of a scale trains with the budget's policy input, so a method that
    # cannot use it (an image-only reward with a points-only policy) is a spec error, not a failed run
    for suite, per_scale in spec.budgets.items():
        for scale in SCALES:
            wanted = getattr(per_scale, scale).policy_input
            for i, m in enumerate(spec.methods):
                if m.method in known_methods and wanted not in policy_inputs(m.method):
                    errors.append(
                        f"budgets.{suite}.{scale}.policy_input: {wanted!r} cannot train methods[{i}] "
                        f"({m.label}, method {m.method!r}: it learns from images only); use image+points, or "
                        "compare a points-only loop with ReLAM's own variants in a spec of their own")

    seeds = spec.seeds if isinstance(spec.seeds, list) else None
    seed_lists = {"seeds": seeds} if seeds is not None else {
        f"seeds.{s}": getattr(spec.seeds, s) for s in SCALES}
    for where, lst in seed_lists.items():
        if not lst:
            errors.append(f"{where}: at least one seed is needed")
        elif len(set(lst)) != len(lst):
            errors.append(f"{where}: duplicate seeds {lst}")

    for t, row in spec.paper.items():
        if t not in spec.tasks:
            errors.append(f"paper.{t}: not one of the spec's tasks ({', '.join(spec.tasks)})")
        for lab in row:
            if lab not in labels:
                errors.append(f"paper.{t}.{lab}: not one of the method labels ({', '.join(labels)})")

    ids = set()
    for i, c in enumerate(spec.claims):
        if c.id in ids:
            errors.append(f"claims[{i}].id: duplicate claim id {c.id!r}")
        ids.add(c.id)
        for j, t in enumerate(c.tasks or []):
            if t not in spec.tasks:
                errors.append(f"claims[{i}].tasks[{j}]: {t!r} is not one of the spec's tasks")
        named: list[tuple[str, str]] = []
        if isinstance(c, OrderingClaim):
            named = [("better", c.better)] + [(f"than[{j}]", x) for j, x in enumerate(c.than)]
        elif isinstance(c, BestClaim):
            named = [("best", c.best)] + [(f"among[{j}]", x) for j, x in enumerate(c.among or [])]
        elif isinstance(c, CloseClaim):
            named = [(f"labels[{j}]", x) for j, x in enumerate(c.labels)]
        for field_name, lab in named:
            if lab not in labels:
                errors.append(f"claims[{i}].{field_name}: {lab!r} is not one of the method labels "
                              f"({', '.join(labels)})")
    if errors:
        raise SpecError(f"{source}: invalid experiment spec\n  " + "\n  ".join(errors))
    spec._suites = suites


def parse_spec(data: Any, source: str = "<spec>") -> Spec:
    """Validate a spec given as a dict (already parsed YAML); errors name ``source``."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: an experiment spec must be a mapping at the top level, "
                        f"got {type(data).__name__}")
    try:
        spec = Spec.model_validate(data)
    except ValidationError as e:
        raise SpecError(_format_validation(source, e)) from None
    _semantic_checks(spec, source)
    return spec


def find_spec(name_or_path: str | Path) -> Path:
    """A spec file from a path or a bare name in experiments/ (``table4`` -> experiments/table4.yaml)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for cand in (SPEC_DIR / f"{name_or_path}.yaml", SPEC_DIR / f"{name_or_path}.yml", SPEC_DIR / str(name_or_path)):
        if cand.is_file():
            return cand
    raise SpecError(f"no spec file {str(name_or_path)!r}: not a file, and not a name in {SPEC_DIR} "
                    f"(known: {', '.join(list_specs()) or 'none'})")


def list_specs() -> list[str]:
    """Names of the specs in experiments/."""
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


def load_spec(name_or_path: str | Path) -> Spec:
    """Read and validate a spec file; any problem raises :class:`SpecError` naming file and field."""
    path = find_spec(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    spec = parse_spec(data, str(path))
    if spec.name != path.stem:
        raise SpecError(f"{path}: name: {spec.name!r} must match the file name {path.stem!r}")
    spec._path = path
    return spec
