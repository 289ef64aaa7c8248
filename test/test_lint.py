"""The ROS conventions' own checks: flake8 with the plugins and rules of ament_flake8 / ament_pep257 (configured in
setup.cfg [flake8], deviations commented there) over every Python file of the package.
"""
import importlib.util
from pathlib import Path
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Everything Python in the repository; build/, .venv/ and runs/ are excluded in setup.cfg.
PATHS = ["bitrl_ros", "test", "bench", "launch", "setup.py"]
# What ament_flake8 runs with (ROS installs these next to it); pinned in requirements-dev.txt.
PLUGINS = ["flake8_builtins", "flake8_comprehensions", "flake8_docstrings", "flake8_import_order", "flake8_quotes"]

if importlib.util.find_spec("flake8") is None:
    pytest.skip("flake8 is not installed (it is pinned in requirements-dev.txt, which `make setup` installs)",
                allow_module_level=True)


def test_flake8_ament_rules():
    missing = [p for p in PLUGINS if importlib.util.find_spec(p) is None]
    assert not missing, f"flake8 plugins missing (pinned in requirements-dev.txt): {missing}"
    paths = [p for p in PATHS if (ROOT / p).exists()]
    proc = subprocess.run([sys.executable, "-m", "flake8", "--config", str(ROOT / "setup.cfg"), *paths],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"flake8 found violations:\n{proc.stdout}{proc.stderr}", pytrace=False)
