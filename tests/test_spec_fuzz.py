"""Fuzzing the spec validator: many malformed variants of experiments/table4.yaml, made by program.

Each variant breaks one thing (a wrong type, a number out of range, a typo in a key, a duplicate
key, a missing field, an unknown name). Every one must be rejected with a :class:`SpecError` (no
other exception, so no traceback reaches a user) whose message names the file and the field that
is wrong. The variants are generated from the real spec, so a field added to table4.yaml is fuzzed
too.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, get_args

import pytest
import yaml

from relam.cache import REPO_ROOT
from relam.experiments.spec import SpecError, list_specs, load_spec
from relam.methods import Budget

TABLE4 = REPO_ROOT / "experiments" / "table4.yaml"
TEXT = TABLE4.read_text()
DATA = yaml.safe_load(TEXT)
MIN_VARIANTS = 50


@dataclass(frozen=True)
class Variant:
    id: str
    text: str    # the malformed spec file
    field: str   # the path the error message must name


def _from_dict(vid: str, field: str, mutate: Callable[[dict[str, Any]], None]) -> Variant:
    data = copy.deepcopy(DATA)
    mutate(data)
    return Variant(vid, yaml.safe_dump(data, sort_keys=False), field)


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        for part in path[:-1]:
            d = d[part]
        d[path[-1]] = value
    return mutate


def _rename(path: list[Any], old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        for part in path:
            d = d[part]
        d[new] = d.pop(old)
    return mutate


def _typo(key: str) -> str:
    """A plausible typo: the last two letters swapped (or one letter doubled for short keys)."""
    return key[:-2] + key[-1] + key[-2] if len(key) > 3 and key[-1] != key[-2] else key + key[-1]


def _bad_values(field: str, value: Any) -> list[tuple[str, Any]]:
    """Values that break one budget field, from the field's type and bounds in :class:`Budget`
    (so a field that may be negative, like log_std_init, is never given a negative number)."""
    info = Budget.model_fields[field]
    if not isinstance(value, (int, float)) or isinstance(value, bool):  # a Literal (policy_input)
        return [("unknown-choice", f"{value}-typo")]
    bad: list[tuple[str, Any]] = [("string", str(value)), ("bool", True)]
    if any(getattr(m, "ge", None) is not None or getattr(m, "gt", None) is not None for m in info.metadata):
        bad.append(("negative", -1))
    if int in (info.annotation, *get_args(info.annotation)):
        bad.append(("fraction", value + 0.5))
    return bad


def budget_variants() -> Iterator[Variant]:
    """One broken field per variant (the kinds of breakage cycled over the fields), then per
    budget an evaluation period longer than the training and a typo in a key."""
    i = 0
    for suite, per_scale in DATA["budgets"].items():
        for scale, budget in per_scale.items():
            for field, value in budget.items():
                choices = _bad_values(field, value)
                kind, bad = choices[i % len(choices)]
                i += 1
                path = f"budgets.{suite}.{scale}.{field}"
                yield _from_dict(f"{path}={kind}", path, _set(["budgets", suite, scale, field], bad))
            yield _from_dict(f"budgets.{suite}.{scale}.eval_every>train_steps", f"budgets.{suite}.{scale}.eval_every",
                             _set(["budgets", suite, scale, "eval_every"], budget["train_steps"] + 1))
            yield _from_dict(f"budgets.{suite}.{scale}.typo", f"budgets.{suite}.{scale}.{_typo('eval_every')}",
                             _rename(["budgets", suite, scale], "eval_every", _typo("eval_every")))


def seed_variants() -> Iterator[Variant]:
    for scale in DATA["seeds"]:
        for kind, bad in (("negative", [-1]), ("bool", [True]), ("string", ["0"]), ("float", [0.0])):
            yield _from_dict(f"seeds.{scale}={kind}", f"seeds.{scale}[0]", _set(["seeds", scale], bad))
    yield _from_dict("seeds=int", "seeds", _set(["seeds"], 5))
    yield _from_dict("seeds.missing-scale", "seeds.paper", lambda d: d["seeds"].pop("paper"))


def number_variants() -> Iterator[Variant]:
    """Paper percentages out of [0, 100] or not numbers; negative tolerances and margins."""
    bad_percent = [("over-100", 150.0), ("negative", -1.0), ("string", "80"), ("bool", True)]
    for i, (task, row) in enumerate(DATA["paper"].items()):
        label = list(row)[i % len(row)]
        kind, bad = bad_percent[i % len(bad_percent)]
        yield _from_dict(f"paper.{task}.{label}={kind}", f"paper.{task}.{label}", _set(["paper", task, label], bad))
    for scale in DATA["tolerance"]:
        yield _from_dict(f"tolerance.{scale}=negative", f"tolerance.{scale}", _set(["tolerance", scale], -0.5))
        yield _from_dict(f"tolerance.{scale}=string", f"tolerance.{scale}", _set(["tolerance", scale], "40"))
    for i, claim in enumerate(DATA["claims"]):
        for scale in claim.get("margin", {}):
            yield _from_dict(f"claims[{i}].margin.{scale}=negative", f"claims[{i}].margin.{scale}",
                             _set(["claims", i, "margin", scale], -5.0))


def key_variants() -> Iterator[Variant]:
    """Typos in keys at every level, and required fields left out."""
    for key in DATA:
        yield _from_dict(f"typo:{key}", _typo(key), _rename([], key, _typo(key)))
    for i in range(len(DATA["methods"])):
        yield _from_dict(f"methods[{i}].typo", f"methods[{i}].{_typo('label')}",
                         _rename(["methods", i], "label", _typo("label")))
    for i in range(len(DATA["claims"])):
        yield _from_dict(f"claims[{i}].typo", f"claims[{i}].{_typo('text')}", _rename(["claims", i], "text", _typo("text")))
    for key in ("name", "title", "report", "tasks", "methods", "seeds", "budgets"):
        yield _from_dict(f"missing:{key}", key, lambda d, key=key: d.pop(key))


def name_variants() -> Iterator[Variant]:
    """Values of the right type that name nothing known (the registry stage of validation)."""
    yield _from_dict("report=chart", "report", _set(["report"], "chart"))
    yield _from_dict("tasks=str", "tasks", _set(["tasks"], "drawer-open-v3"))
    yield _from_dict("tasks[0]=typo", "tasks[0]", _set(["tasks", 0], "drawer-opne-v3"))
    yield _from_dict("methods[4].method=typo", "methods[4].method", _set(["methods", 4, "method"], "relamm"))
    yield _from_dict("methods[4].settings=typo", "methods[4].settings.n_point",
                     _set(["methods", 4, "settings"], {"n_point": 4}))
    yield _from_dict("methods[4].settings=string", "methods[4].settings.n_points",
                     _set(["methods", 4, "settings"], {"n_points": "4"}))
    yield _from_dict("claims[0].kind=typo", "claims[0]", _set(["claims", 0, "kind"], "sorted"))
    yield _from_dict("claims[0].better=typo", "claims[0].better", _set(["claims", 0, "better"], "ReLAMM"))
    yield _from_dict("budgets.manskill", "budgets.manskill", _rename(["budgets"], "maniskill", "manskill"))


def _scalar_lines(text: str) -> Iterator[tuple[int, str, str, int]]:
    """(line index, field path, ``key: value`` text, indent) of each block-mapping line with a value.

    A small indentation tracker, enough for the block style of the shipped specs: ``- `` items
    count up per parent, folded scalars (``>``) are skipped, flow values are taken whole.
    """
    stack: list[tuple[int, str]] = []  # (indent, path) of the open mappings and items
    items: dict[str, int] = {}
    folded_at: int | None = None
    for n, line in enumerate(text.splitlines()):
        body = line.strip()
        indent = len(line) - len(line.lstrip())
        if folded_at is not None and (not body or indent > folded_at):
            continue
        folded_at = None
        if not body or body.startswith("#"):
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if body.startswith("- "):
            parent = stack[-1][1] if stack else ""
            stack.append((indent, f"{parent}[{items.get(parent, 0)}]"))
            items[parent] = items.get(parent, 0) + 1
            body, indent = body[2:], indent + 2
        m = re.match(r"([A-Za-z_][\w-]*):(?: (.*))?$", body)
        if not m:
            continue
        key, value = m.group(1), (m.group(2) or "").strip()
        path = f"{stack[-1][1]}.{key}" if stack else key
        if not value:
            stack.append((indent, path))
        elif value in (">", "|", ">-", "|-"):
            folded_at = indent
        else:
            yield n, path, body, indent


def duplicate_key_variants() -> Iterator[Variant]:
    """A key repeated in the same mapping: in block style (a line repeated) and in flow style."""
    lines = TEXT.splitlines()
    for n, path, body, indent in _scalar_lines(TEXT):
        dup = lines[: n + 1] + [" " * indent + body] + lines[n + 1:]
        yield Variant(f"duplicate:{path}", "\n".join(dup) + "\n", path)
    for i, entry in enumerate(DATA["methods"]):
        flow = f"{{label: {entry['label']}, method: {entry['method']}"
        assert flow in TEXT, flow
        yield Variant(f"duplicate:methods[{i}].method", TEXT.replace(flow, flow + ", method: random"),
                      f"methods[{i}].method")


def all_variants() -> list[Variant]:
    out = [*budget_variants(), *seed_variants(), *number_variants(), *key_variants(), *name_variants(),
           *duplicate_key_variants()]
    assert len({v.id for v in out}) == len(out), "two variants share an id"
    return out


VARIANTS = all_variants()


def test_enough_variants():
    assert len(VARIANTS) >= MIN_VARIANTS, len(VARIANTS)
    assert len({v.text for v in VARIANTS}) == len(VARIANTS), "two variants are the same spec"


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.id for v in VARIANTS])
def test_malformed_spec_is_rejected(variant, tmp_path):
    path = tmp_path / "table4.yaml"
    path.write_text(variant.text)
    with pytest.raises(SpecError) as e:  # any other exception fails the test: a traceback for a user
        load_spec(path)
    msg = str(e.value)
    assert msg.startswith(str(path)), msg  # the file
    assert re.search(rf"(^|\s){re.escape(variant.field)}[:\s]", msg, re.M), (variant.field, msg)  # the field
    assert "Traceback" not in msg


def test_unmodified_table4_loads(tmp_path):
    """The variants differ from table4.yaml only by their mutation: the original is valid."""
    path = tmp_path / "table4.yaml"
    path.write_text(yaml.safe_dump(DATA, sort_keys=False))
    load_spec(path)
    path.write_text(TEXT)
    load_spec(path)


@pytest.mark.parametrize("name", list_specs())
def test_shipped_specs_still_load(name):
    assert load_spec(name).name == name
