"""relam.methods: the template ``RewardMethod.run`` (online on Meta-World, offline elsewhere) and the
rollout sizing every online method shares."""
from __future__ import annotations

from pathlib import Path

import pytest

from relam.methods import Budget, MethodNotImplementedError, MethodSettings, RewardMethod, RunContext


class _OnlineOnly(RewardMethod):
    name = "toy_online"

    def online(self, ctx):
        return "online"


class _OfflineOnly(RewardMethod):
    name = "toy_offline"

    def offline(self, ctx):
        return "offline"


def _ctx(task: str, train_steps: int = 10_000) -> RunContext:
    return RunContext(task=task, method="toy", settings=MethodSettings(), seed=0,
                      budget=Budget(train_steps=train_steps, eval_every=5, eval_episodes=1), scale="smoke",
                      out_dir=Path("."))


def test_run_dispatches_on_the_suite():
    assert _OnlineOnly().run(_ctx("drawer-open-v3")) == "online"
    assert _OfflineOnly().run(_ctx("PushCube-v1")) == "offline"


def test_a_missing_setting_names_the_method_and_the_suite():
    with pytest.raises(MethodNotImplementedError, match=r"'toy_online' has no offline.*PushCube-v1.*'maniskill'"
                                                        r".*only online\(\)"):
        _OnlineOnly().run(_ctx("PushCube-v1"))
    with pytest.raises(MethodNotImplementedError, match=r"'toy_offline' has no online.*'metaworld'"):
        _OfflineOnly().run(_ctx("drawer-open-v3"))


@pytest.mark.parametrize("train_steps, rollout", [(10, 64), (300, 300), (400_000, 2000)])
def test_the_rollout_is_appendix_c_2000_steps_or_the_whole_budget(train_steps, rollout):
    assert _ctx("drawer-open-v3", train_steps).ppo_settings().n_steps == rollout


def test_every_entry_point_registers_its_method_under_its_name():
    """pyproject's ``relam.methods`` entry points, as installed: each module registers the class the
    entry point names under the entry point's name (a stale install fails here: re-run scripts/setup.sh)."""
    import tomllib

    from relam import methods
    from relam.cache import REPO_ROOT

    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["relam.methods"]
    installed = {name: ep.value for name, ep in methods._entry_points().items()}
    assert installed == declared, "the installed entry points differ from pyproject.toml: run bash scripts/setup.sh"
    for name, ep in methods._entry_points().items():
        method = methods.get_method(name)
        assert type(method) is ep.load() and method.name == name


def test_the_core_names_no_plug_in_module():
    """relam.methods finds methods through entry points only: no module path of an implementation in it."""
    import inspect

    from relam import methods

    source = inspect.getsource(methods)
    for module in ("relam.relam_method", "baselines."):
        assert module not in source, module


def test_relam_method_modules_registers_more_methods(tmp_path, monkeypatch):
    (tmp_path / "toy_plugin_methods.py").write_text(
        "from relam.methods import RewardMethod, register_method\n\n"
        "@register_method('toy_plugin')\n"
        "class ToyPlugin(RewardMethod):\n"
        "    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("RELAM_METHOD_MODULES", "toy_plugin_methods")
    from relam import methods

    try:
        assert "toy_plugin" in methods.list_methods() and methods.is_implemented("toy_plugin")
    finally:
        methods._REGISTRY.pop("toy_plugin", None)
        methods._imported_plugins.discard("toy_plugin_methods")
