"""An installed package (not a checkout) carries what it reads: the config schema is package data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_non_editable_install_validates_a_config(tmp_path: Path):
    """``pip install --target`` of a copy of the project (offline, no build isolation), then, in a
    Python that sees only that install and the environment's dependencies (no .pth files, so no
    editable install), effdepth finds its schema and validates config/test.yaml."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    target = tmp_path / "target"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*pip, "--target", str(target), str(source)], check=True, capture_output=True, timeout=300)
    assert (target / "effdepth" / "schemas" / "config.schema.yaml").is_file()

    code = (
        "import effdepth, effdepth.config as c; "
        "config = c.load_config('config/test.yaml'); "
        "print(effdepth.__file__); print(c.DEFAULT_SCHEMA); print(sorted(config['analyses']))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([str(target), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    # -S: no site module, so no .pth file (the checkout's editable install) puts another effdepth on the path.
    result = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    module, schema, analyses = result.stdout.splitlines()
    assert Path(module).is_relative_to(target) and Path(schema).is_relative_to(target)
    assert "logit_lens" in analyses
