"""The launch files, checked statically (`launch`/`launch_ros` are not installable here): every executable they
start is a console_scripts entry point of setup.py whose module:function imports, every package is bitrl_ros,
every parameter file and included launch file exists and is installed by setup.py's data_files.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import os
from pathlib import Path

import pytest
import setuptools

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


@pytest.fixture(scope="module")
def setup_kwargs():
    """setup.py's keyword arguments, captured by running it with setuptools.setup replaced."""
    captured = {}
    real = setuptools.setup
    setuptools.setup = lambda **kw: captured.update(kw)
    cwd = os.getcwd()
    try:
        os.chdir(ROOT)
        code = compile((ROOT / "setup.py").read_text(), "setup.py", "exec")
        exec(code, {"__name__": "__main__", "__file__": str(ROOT / "setup.py")})
    finally:
        os.chdir(cwd)
        setuptools.setup = real
    return captured


@pytest.fixture(scope="module")
def entry_points(setup_kwargs):
    eps = {}
    for line in setup_kwargs["entry_points"]["console_scripts"]:
        name, _, target = (part.strip() for part in line.partition("="))
        eps[name] = target
    return eps


@pytest.fixture(scope="module")
def installed(setup_kwargs):
    """{installed path relative to the prefix: source path}."""
    out = {}
    for dest, sources in setup_kwargs["data_files"]:
        for src in sources:
            out[f"{dest}/{Path(src).name}"] = src
    return out


def _calls(tree, name):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called == name:
                yield node


def _strings(tree):
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _module_constants(tree) -> dict:
    consts = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                consts[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return consts


def _resolve(expr, consts):
    """The possible string values of a Node(...) keyword: a constant, a module constant, or a loop variable over
    a module-level tuple (as agent.launch.py does for its four nodes).
    """
    if isinstance(expr, ast.Constant):
        return [expr.value]
    if isinstance(expr, ast.Name) and isinstance(consts.get(expr.id), str):
        return [consts[expr.id]]
    return None


def _loop_values(tree, consts) -> dict:
    """{loop variable: values} for `for x in CONSTANT_TUPLE` loops."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and isinstance(node.iter, ast.Name):
            values = consts.get(node.iter.id)
            if isinstance(values, tuple):
                out[node.target.id] = list(values)
    return out


def test_there_are_launch_files():
    assert {p.name for p in LAUNCH_FILES} >= {"agent.launch.py", "sim.launch.py", "replay.launch.py"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file(path, entry_points, installed):
    tree = ast.parse(path.read_text(), filename=str(path))
    consts = _module_constants(tree)
    loops = _loop_values(tree, consts)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    for call in [*_calls(tree, "Node"), *_calls(tree, "LifecycleNode")]:
        kw = {k.arg: k.value for k in call.keywords}
        assert "package" in kw and "executable" in kw, f"{path.name}: Node() without package/executable"
        assert _resolve(kw["package"], consts) == ["bitrl_ros"], f"{path.name}: a package other than bitrl_ros"
        executables = _resolve(kw["executable"], consts)
        if executables is None and isinstance(kw["executable"], ast.Name):
            executables = loops.get(kw["executable"].id)
        assert executables, f"{path.name}: cannot tell which executable a Node() starts"
        for exe in executables:
            assert exe in entry_points, f"{path.name}: executable '{exe}' is not a console_scripts entry point"
            module, _, func = entry_points[exe].partition(":")
            assert callable(getattr(importlib.import_module(module), func)), f"{entry_points[exe]} is not callable"
    for call in _calls(tree, "get_package_share_directory"):
        assert [_resolve(a, consts) for a in call.args] == [["bitrl_ros"]], f"{path.name}: another package's share"
    for text in _strings(tree):
        if text.endswith(".yaml"):
            assert (ROOT / "config" / text).is_file(), f"{path.name}: config/{text} does not exist"
            assert f"share/bitrl_ros/config/{text}" in installed, f"config/{text} is not installed by setup.py"
        if text.endswith(".launch.py"):
            assert (ROOT / "launch" / text).is_file(), f"{path.name}: launch/{text} does not exist"
            assert f"share/bitrl_ros/launch/{text}" in installed, f"launch/{text} is not installed by setup.py"


def test_every_launch_file_and_config_is_installed(installed):
    for path in LAUNCH_FILES:
        assert f"share/bitrl_ros/launch/{path.name}" in installed
    for path in (ROOT / "config").glob("*.yaml"):
        assert f"share/bitrl_ros/config/{path.name}" in installed
    assert "share/bitrl_ros/package.xml" in installed


def test_node_entry_points_import(entry_points):
    for exe in ("sim_bridge", "state_serializer", "ternary_encoder", "policy_value", "diagnostics_monitor",
                "bag_recorder", "bag_replay"):
        module, _, func = entry_points[exe].partition(":")
        # Each executable is its node module's main(), the function that builds and spins that node.
        assert module == f"bitrl_ros.nodes.{exe}" and func == "main", entry_points[exe]
        main = getattr(importlib.import_module(module), func)
        assert callable(main) and list(inspect.signature(main).parameters) == ["args"], entry_points[exe]
