"""Experiment specs: one YAML file per paper table or figure, validated before anything runs.

A spec names the tasks (rows or panels), the methods with their settings (columns or curves), the
seeds, the budget of one run per suite and per *scale* (``smoke`` = CI minutes, ``quick`` = hours
on one 2-core machine, ``paper`` = the paper's budgets), the paper's numbers where the paper gives
them, and the claims the reproduction tests check. Validation is two-staged: pydantic checks the
structure (unknown keys and wrong types), then :func:`load_spec` checks the names against the
registries (tasks, methods, method settings, labels used by paper numbers and claims). Either
stage fails with a :class:`SpecError` naming the file, the field path and what was expected, so a
typo costs seconds rather than a half-finished sweep.

Specs are strict on purpose, because a silently "fixed" spec runs the wrong sweep:

- YAML is read with :class:`SpecLoader`, which rejects a duplicate key (plain YAML keeps the last
  one, so ``{method: relam, method: random}`` would quietly run random);
- numbers are strict: ``"200"`` and ``true`` are not numbers, seeds are non-negative integers,
  paper values are percentages in [0, 100], tolerances and margins are non-negative, and
  ``eval_every <= train_steps`` (see :class:`relam.methods.Budget`);
- an unknown key lists the valid keys of its mapping and suggests the closest one.
"""
from __future__ import annotations

import difflib
import inspect
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag,
                      ValidationError)

from relam.cache import REPO_ROOT
from relam.methods import Budget, MethodSettings, list_methods, policy_inputs, settings_model
from relam.scales import SCALES, check_scale

__all__ = [
    "SCALES",
    "SUITES",
    "BestClaim",
    "CellClaim",
    "CloseClaim",
    "DuplicateKeyError",
    "MethodEntry",
    "OrderingClaim",
    "Spec",
    "SpecError",
    "SpecLoader",
    "find_spec",
    "list_specs",
    "load_spec",
]

SUITES = ("metaworld", "maniskill")
#: the specs of a checkout
SPEC_DIR = REPO_ROOT / "experiments"
#: the same specs as installed with the package (pyproject.toml ships experiments/ as relam.specs)
SHIPPED_SPEC_DIR = Path(__file__).resolve().parent.parent / "specs"
Scale = Literal["smoke", "quick", "paper"]


class SpecError(ValueError):
    """A malformed experiment spec; the message names the file and the field path."""


# --- YAML -------------------------------------------------------------------------------------
class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice; ``field`` is its path (``methods[4].method``) and
    ``where``/``first`` say where the second and the first occurrence are (line, and column when
    both are on one line, as in a flow mapping ``{a: 1, a: 2}``)."""

    def __init__(self, field: str, key: Any, where: str, first: str):
        self.field, self.key, self.where, self.first = field, key, where, first
        super().__init__(f"{field}: duplicate key {key!r} at {where} (first at {first})")


class SpecLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` for specs: duplicate keys are errors, and ``3e-4`` is a float.

    Plain YAML lets the last of two equal keys win without a word; in a spec that silently swaps
    a method or a seed list. YAML 1.1 reads an exponent without a dot (``3e-4``) as a string,
    which the strict number fields would then reject although the author meant a number.
    """

    def construct_document(self, node: yaml.Node) -> Any:
        _reject_duplicate_keys(node, "", set())
        return super().construct_document(node)


SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))

_MERGE_TAG = "tag:yaml.org,2002:merge"


def _reject_duplicate_keys(node: yaml.Node, path: str, seen: set[int]) -> None:
    """Walk the composed YAML tree; raise :class:`DuplicateKeyError` at the first repeated key."""
    if id(node) in seen:  # an alias to a node already checked (or a recursive one)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], yaml.Mark] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key, mark = (key_node.tag, key_node.value), key_node.start_mark
            field = f"{path}.{key_node.value}" if path else str(key_node.value)
            if key in first:
                raise DuplicateKeyError(field, key_node.value, *_places(mark, first[key]))
            first[key] = mark
            _reject_duplicate_keys(value_node, field, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _reject_duplicate_keys(item, f"{path}[{i}]", seen)


def _places(second: yaml.Mark, first: yaml.Mark) -> tuple[str, str]:
    """'line L' for both marks, with the columns when they share the line."""
    if second.line != first.line:
        return f"line {second.line + 1}", f"line {first.line + 1}"
    return (f"line {second.line + 1}, column {second.column + 1}",
            f"line {first.line + 1}, column {first.column + 1}")


# --- the models -------------------------------------------------------------------------------
#: strict numbers: a quoted "200" or a YAML boolean is an error, not a number
Seed = Annotated[int, Field(strict=True, ge=0, description="a non-negative integer seed")]
Percent = Annotated[float, Field(strict=True, ge=0.0, le=100.0, description="percent, in [0, 100]")]
Points = Annotated[float, Field(strict=True, ge=0.0, description="percentage points, >= 0")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PerScale(_Strict):
    """Percentage points per scale (a tolerance or a margin); ``None``: not checked at this scale."""

    smoke: Points | None = None
    quick: Points | None = None
    paper: Points | None = None

    def at(self, scale: str) -> float | None:
        return getattr(self, scale)


class SeedsPerScale(_Strict):
    smoke: list[Seed]
    quick: list[Seed]
    paper: list[Seed]


def _seeds_form(value: Any) -> str | None:
    """Pick the branch of ``seeds`` from the input's shape, so an error shows only that branch."""
    if isinstance(value, list):
        return "list"
    if isinstance(value, (dict, SeedsPerScale)):
        return "per scale"
    return None


Seeds = Annotated[
    Union[Annotated[list[Seed], Tag("list")], Annotated[SeedsPerScale, Tag("per scale")]],
    Discriminator(_seeds_form, custom_error_type="seeds_type",
                  custom_error_message="Input should be a list of seeds, or a mapping of smoke, quick "
                                       "and paper to lists of seeds")]


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
    """``better`` reaches a mean success >= each of ``than`` (minus the margin, plus the gap) on
    every task."""

    kind: Literal["ordering"]
    better: str
    than: list[str] = Field(min_length=1)
    gap: PerScale = Field(
        default_factory=PerScale,
        description="the lead ``better`` must have, percentage points (an ordering with no gap holds at "
                    "0 against 0, so a claim that a method learns at all needs one)")


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
    seeds: Seeds
    budgets: dict[Literal["metaworld", "maniskill"], BudgetsPerScale]
    task_budgets: dict[str, dict[Literal["smoke", "quick", "paper"], dict[str, Any]]] = Field(
        default_factory=dict,
        description="task -> scale -> budget fields that replace its suite's for that task's row "
                    "(every method of the row alike), for a task measured to need another budget")
    paper: dict[str, dict[str, Percent | None]] = Field(
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
        """The budget of one run of ``task`` at ``scale``: its suite's, with the fields that
        ``task_budgets`` sets for the task replaced."""
        _check_scale(scale)
        base: Budget = getattr(self.budgets[self.suite_of(task)], scale)
        override = self.task_budgets.get(task, {}).get(scale)
        return _with_fields(base, override) if override else base

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
    check_scale(scale)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top level>"


def _unwrap(tp: Any) -> Any:
    """``Annotated[X, ...]`` -> X and ``X | None`` -> X (pydantic puts no tag in the path for these)."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
            continue
        if get_origin(tp) in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp


def _branch_tags(member: Any) -> set[Any]:
    """The names pydantic may use for one branch of a union in an error path."""
    tags: set[Any] = set()
    if get_origin(member) is Annotated:
        tags |= {m.tag for m in get_args(member)[1:] if isinstance(m, Tag)}
    model = _unwrap(member)
    if inspect.isclass(model) and issubclass(model, BaseModel):
        tags.add(model.__name__)
        for f in model.model_fields.values():  # discriminated unions tag a branch by its Literal
            if get_origin(f.annotation) is Literal:
                tags |= set(get_args(f.annotation))
    return tags


def _child(tp: Any, part: Any) -> Any:
    """The type one path step below ``tp`` (None when it cannot be told)."""
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field else None
    origin = get_origin(tp)
    if origin in (list, tuple) and isinstance(part, int):
        return get_args(tp)[0]
    if origin is dict:
        return get_args(tp)[1]
    return None


def _walk(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
    """Follow an error path from :class:`Spec`: the path without union tags, and the type it ends at.

    Pydantic names the branch of a union in the path (``seeds.list[0]``); a spec author never
    writes that name, so it is dropped here, and the type is followed to list valid keys.
    """
    tp: Any = Spec
    clean: list[Any] = []
    parts = list(loc)
    while parts:
        tp = _unwrap(tp)
        if get_origin(tp) in (Union, types.UnionType):  # the next part names the branch
            tag = parts.pop(0)
            tp = next((m for m in get_args(tp) if tag in _branch_tags(m)), None)
            continue
        part = parts.pop(0)
        clean.append(part)
        tp = _child(tp, part)
    return tuple(clean), _unwrap(tp)


def _valid_keys(container: Any) -> list[str] | None:
    """The keys a mapping of this type accepts: a model's fields, or a dict's ``Literal`` keys."""
    if inspect.isclass(container) and issubclass(container, BaseModel):
        return list(container.model_fields)
    if get_origin(container) is dict:
        key_type = _unwrap(get_args(container)[0])
        if get_origin(key_type) is Literal:
            return [str(k) for k in get_args(key_type)]
    return None


def _unknown_key(key: Any, container: Any) -> str:
    """'unknown key' with the closest valid key and the full list (when the container is known)."""
    valid = _valid_keys(container)
    if valid is None:
        return "unknown key"
    close = difflib.get_close_matches(str(key), valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key{hint}; valid keys: {', '.join(valid) or 'none'}"


def _error_line(e: dict[str, Any], loc: tuple[Any, ...], container: Any = None) -> str:
    """One line per pydantic error: ``path: what is wrong (got value)``; ``container`` is the
    type of the mapping that holds the last part of the path (to list its valid keys)."""
    if e["type"] == "extra_forbidden":
        return f"{_loc(loc)}: {_unknown_key(loc[-1] if loc else '', container)}"
    msg = e["msg"].removeprefix("Value error, ")
    got_s = "" if e["type"] == "missing" else f" (got {e.get('input')!r})"
    if len(got_s) > 120:
        got_s = got_s[:117] + "...)"
    return f"{_loc(loc)}: {msg}{got_s}"


def _format_validation(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid experiment spec"]
    for e in err.errors():
        raw = tuple(e["loc"])
        if raw and raw[-1] == "[key]":  # a dict key out of its Literal (budgets.manskill)
            parent, container = _walk(raw[:-2])
            lines.append(f"  {_loc(parent + (raw[-2],))}: {_unknown_key(raw[-2], container)}")
            continue
        loc, _ = _walk(raw)
        container = _walk(raw[:-1])[1] if e["type"] == "extra_forbidden" else None
        lines.append("  " + _error_line(e, loc, container))
    return "\n".join(lines)


def _with_fields(base: Budget, fields: dict[str, Any]) -> Budget:
    """``base`` with ``fields`` replaced, validated whole (a task's row passes every rule of a budget)."""
    return Budget.model_validate({**base.model_dump(), **fields})


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
        model = settings_model(m.method)
        try:  # strict, as the spec's own numbers: "4" or true is not a number
            model.model_validate(m.settings, strict=True)
        except ValidationError as e:
            for d in e.errors():
                line = _error_line(d, tuple(d["loc"]), model)
                errors.append(f"methods[{i}].settings.{line} [settings of method {m.method!r}]")
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        errors.append(f"methods: duplicate labels {dup}")
    for t, per_scale in spec.task_budgets.items():
        if t not in spec.tasks:
            errors.append(f"task_budgets.{t}: not one of the spec's tasks ({', '.join(spec.tasks)})")
            continue
        base = spec.budgets.get(suites.get(t, ""))
        for scale, fields in per_scale.items():
            if "policy_input" in fields:
                errors.append(f"task_budgets.{t}.{scale}.policy_input: a row's policy input is its suite's "
                              f"(budgets.<suite>.{scale}.policy_input); give that input a spec of its own")
                continue
            if base is None:
                continue
            try:
                _with_fields(getattr(base, scale), fields)
            except ValidationError as e:
                for d in e.errors():
                    errors.append(f"task_budgets.{t}.{scale}.{_error_line(d, tuple(d['loc']), Budget)}")
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


def spec_dirs() -> list[Path]:
    """Where bare spec names are looked up, in order: the checkout's experiments/ (when relam runs
    from a clone), then the specs installed with the package (when it does not)."""
    return [d for d in (SPEC_DIR, SHIPPED_SPEC_DIR) if d.is_dir()]


def find_spec(name_or_path: str | Path) -> Path:
    """A spec file from a path (absolute, or relative to the working directory) or a bare name
    (``table4`` -> ``experiments/table4.yaml`` of the checkout, else of the installed package)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for d in spec_dirs():
        for cand in (d / f"{name_or_path}.yaml", d / f"{name_or_path}.yml", d / str(name_or_path)):
            if cand.is_file():
                return cand
    close = difflib.get_close_matches(str(name_or_path), list_specs(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    where = " or ".join(str(d) for d in spec_dirs()) or f"{SPEC_DIR} (missing) or {SHIPPED_SPEC_DIR} (missing)"
    raise SpecError(f"no spec file {str(name_or_path)!r}: not a file (from {Path.cwd()}), and not a name in "
                    f"{where} (known: {', '.join(list_specs()) or 'none'}){hint}")


def list_specs() -> list[str]:
    """Names of the specs found by bare name (see :func:`spec_dirs`)."""
    return sorted({p.stem for d in spec_dirs() for p in d.glob("*.yaml")})


def load_spec(name_or_path: str | Path) -> Spec:
    """Read and validate a spec file; any problem raises :class:`SpecError` naming file and field."""
    path = find_spec(name_or_path)
    try:
        data = yaml.load(path.read_text(), Loader=SpecLoader)  # noqa: S506 (a SafeLoader)
    except DuplicateKeyError as e:
        raise SpecError(f"{path}: invalid experiment spec\n  {e}; YAML would keep only the last one, "
                        "so remove or rename one of them") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    spec = parse_spec(data, str(path))
    if spec.name != path.stem:
        raise SpecError(f"{path}: name: {spec.name!r} must match the file name {path.stem!r}")
    spec._path = path
    return spec
