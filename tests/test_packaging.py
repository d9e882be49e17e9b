"""Packaging: optional extras fail with an error naming the extra; provenance versions; specs found
outside a checkout."""
import sys
from pathlib import Path

import pytest

from relam.versions import MissingExtraError, import_extra, package_versions


def test_package_versions_reads_metadata_and_skips_what_is_missing():
    v = package_versions(["numpy", "no-such-distribution-here"])
    assert set(v) == {"numpy"} and v["numpy"].startswith("1.")


def test_missing_extra_names_the_extra_and_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"--backend ray.*'ray'.*pip install 'relam\[ray\]'"):
        import_extra("ray", "ray", "--backend ray")
    with pytest.raises(ValueError, match="unknown extra"):
        import_extra("ray", "rays", "--backend ray")


def test_ray_backend_without_ray_says_which_extra(monkeypatch):
    from relam.experiments.backends import get_backend
    from relam.experiments.runner import execute_run

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError, match=r"relam\[ray\]"):
        get_backend("ray", execute_run)


def test_dinov2_without_transformers_says_which_extra(monkeypatch, tmp_path):
    from relam.perception.encoders import Dinov2Encoder

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match=r"'dinov2' encoder.*relam\[pretrained\]"):
        Dinov2Encoder(str(tmp_path))


def test_pyproject_lists_every_package_and_ships_the_specs():
    import tomllib

    from relam.cache import REPO_ROOT

    tool = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    tree = {".".join(p.parent.relative_to(REPO_ROOT).parts) for top in ("relam", "baselines")
            for p in (REPO_ROOT / top).rglob("__init__.py")}
    missing = tree - set(tool["packages"])
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert tool["package-dir"]["relam.specs"] == "experiments" and "relam.specs" in tool["packages"]


def test_specs_are_found_by_name_without_a_checkout(monkeypatch, tmp_path):
    """Installed outside a clone, bare names come from the specs shipped in the package; paths work
    relative to the working directory."""
    import shutil

    import relam.experiments.spec as spec_mod

    shipped = tmp_path / "site" / "relam" / "specs"
    shutil.copytree(spec_mod.SPEC_DIR, shipped)
    monkeypatch.setattr(spec_mod, "SPEC_DIR", tmp_path / "no-checkout" / "experiments")
    monkeypatch.setattr(spec_mod, "SHIPPED_SPEC_DIR", shipped)
    assert spec_mod.spec_dirs() == [shipped]
    assert "table4" in spec_mod.list_specs()
    assert spec_mod.load_spec("table4").name == "table4"
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    shutil.copy(shipped / "fig4.yaml", elsewhere / "fig4.yaml")
    monkeypatch.chdir(elsewhere)
    assert spec_mod.find_spec("fig4.yaml") == Path("fig4.yaml")
    with pytest.raises(spec_mod.SpecError, match=r"not a name in .*specs.*did you mean 'table4'"):
        spec_mod.find_spec("tabel4")


#: distributions whose import name differs from their name
_IMPORT_NAMES = {"mani-skill": "mani_skill", "opencv-python": "cv2", "stable-baselines3": "stable_baselines3",
                 "pyyaml": "yaml"}
#: dependencies declared although relam imports nothing of them, and why
_NOT_IMPORTED = {"packaging": "gymnasium's MuJoCo renderer imports it without declaring it"}


def test_every_runtime_dependency_is_imported():
    """A pinned dependency nothing imports is a defect (d3rlpy 2.7.0 was one until issue 17: the
    own IQL stayed, benchmarks/bench_iql.py has the comparison)."""
    import re
    import tomllib

    from relam.cache import REPO_ROOT

    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].strip().lower() for d in deps]
    source = "\n".join(p.read_text() for top in ("relam", "baselines") for p in (REPO_ROOT / top).rglob("*.py"))
    unused = []
    for name in names:
        if name in _NOT_IMPORTED:
            continue
        mod = _IMPORT_NAMES.get(name, name.replace("-", "_"))
        if not re.search(rf"^\s*(import|from)\s+{re.escape(mod)}(\.|\s|$)", source, re.M):
            unused.append(name)
    assert not unused, f"pyproject.toml pins {unused} but nothing in relam/ or baselines/ imports them"
