"""launch/easi3r.launch.py, config/easi3r.yaml and config/easi3r.rviz, checked without ``launch`` installed:
the launch file is parsed with ``ast`` and also evaluated against small stand-ins of the launch API, and
the params file is compared with the parameters the node declares (both ways)."""
import ast
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml

from easi3r_ros.ros.parameters import PARAMS, SPECS, check_all, check_value, param_type_name

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "easi3r.launch.py"
YAML = REPO / "config" / "easi3r.yaml"
RVIZ = REPO / "config" / "easi3r.rviz"
LAUNCH_ARGS = {"checkpoint", "image_topic", "camera_info_topic", "params_file", "use_sim_time", "rviz"}


def _strings(tree):
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_launch_file_parses_and_names_package_executable_arguments():
    tree = ast.parse(LAUNCH.read_text())
    funcs = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs
    strings = _strings(tree)
    assert {"easi3r_ros", "easi3r_node", "easi3r.yaml", "config", "easi3r.rviz"} <= strings
    declared = {c.args[0].value for c in ast.walk(tree) if isinstance(c, ast.Call)
                and getattr(c.func, "id", None) == "DeclareLaunchArgument"}
    assert LAUNCH_ARGS <= declared
    # every LaunchConfiguration refers to a declared argument
    used = {c.args[0].value for c in ast.walk(tree) if isinstance(c, ast.Call)
            and getattr(c.func, "id", None) == "LaunchConfiguration" and isinstance(c.args[0], ast.Constant)}
    assert {"params_file", "image_topic", "use_sim_time", "rviz"} <= used
    assert used <= declared
    # the executable it names exists as a console script
    setup = (REPO / "setup.py").read_text()
    assert "easi3r_node = easi3r_ros.ros.node:main" in setup


# --------------------------------------------------------------------- a tiny stand-in for launch/launch_ros
class _Rec:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Rec):
    def perform(self, context):
        return context.launch_configurations[self.args[0]]


class _PathJoin(_Rec):
    def perform(self, context):
        return "/".join(p.perform(context) if hasattr(p, "perform") else str(p) for p in self.args[0])


class _FindPackageShare(_Rec):
    def perform(self, context):
        return str(REPO)  # the share folder mirrors the source layout (launch/, config/)


def _stub_modules():
    mods = {}
    for name in ("launch", "launch.actions", "launch.conditions", "launch.substitutions", "launch_ros",
                 "launch_ros.actions", "launch_ros.substitutions"):
        mods[name] = types.ModuleType(name)
    mods["launch"].LaunchDescription = _Rec
    mods["launch.actions"].DeclareLaunchArgument = type("DeclareLaunchArgument", (_Rec,), {})
    mods["launch.actions"].OpaqueFunction = type("OpaqueFunction", (_Rec,), {})
    mods["launch.conditions"].IfCondition = type("IfCondition", (_Rec,), {})
    mods["launch.substitutions"].LaunchConfiguration = _LaunchConfiguration
    mods["launch.substitutions"].PathJoinSubstitution = _PathJoin
    mods["launch_ros.actions"].Node = type("Node", (_Rec,), {})
    mods["launch_ros.substitutions"].FindPackageShare = _FindPackageShare
    return mods


def test_launch_file_evaluates_to_the_node_with_params_file(monkeypatch):
    for name, mod in _stub_modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("easi3r_launch_under_test", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    entities = ld.args[0]
    decl = {e.args[0]: e.kwargs.get("default_value") for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    assert LAUNCH_ARGS <= set(decl)
    context = types.SimpleNamespace(launch_configurations={})
    for k, v in decl.items():
        context.launch_configurations[k] = v.perform(context) if hasattr(v, "perform") else v
    assert Path(context.launch_configurations["params_file"]) == YAML
    context.launch_configurations.update(checkpoint="/models/x.pth", image_topic="/cam/image_raw")
    opaque = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    nodes = [n for e in opaque for n in e.kwargs["function"](context)]
    nodes += [e for e in entities if type(e).__name__ == "Node"]
    ours = [n for n in nodes if n.kwargs["executable"] == "easi3r_node"]
    assert len(ours) == 1
    n = ours[0].kwargs
    assert n["package"] == "easi3r_ros"
    params_file, overrides = n["parameters"]
    assert Path(params_file) == YAML and overrides["checkpoint"] == "/models/x.pth"
    assert overrides["use_sim_time"] is False and "random_weights" not in overrides
    assert set(overrides) - {"use_sim_time"} <= set(SPECS)
    remaps = dict(n["remappings"])
    assert remaps["image"] == "/cam/image_raw" and remaps["camera_info"] == "/camera/camera_info"
    rviz = [x for x in nodes if x.kwargs["executable"] == "rviz2"][0]
    assert rviz.kwargs["arguments"][1].perform(context).endswith("config/easi3r.rviz")


def test_params_file_matches_declared_parameters():
    doc = yaml.safe_load(YAML.read_text())
    values = doc["/**"]["ros__parameters"]
    assert set(values) == {p.name for p in PARAMS}, "config/easi3r.yaml and the node's parameters differ"
    for name, value in values.items():
        spec = SPECS[name]
        kind = param_type_name(spec)
        ok = {"bool": lambda v: isinstance(v, bool), "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "double": lambda v: isinstance(v, float), "string": lambda v: isinstance(v, str),
              "double_array": lambda v: isinstance(v, list) and all(isinstance(x, float) for x in v)}[kind]
        assert ok(value), f"{name}: {value!r} is not a {kind}"
        assert check_value(spec, value) is None
        assert value == spec.default, f"{name}: the file and the declared default differ"
    assert check_all(values) is None
    # every parameter is explained by a comment in the file
    text = YAML.read_text()
    assert text.count("#") > len(values)


def test_rviz_config_shows_the_outputs():
    doc = yaml.safe_load(RVIZ.read_text())
    vm = doc["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "odom"
    displays = {d["Class"]: d for d in vm["Displays"]}
    topics = {d["Topic"]["Value"] for d in vm["Displays"] if "Topic" in d}
    assert {"rviz_default_plugins/TF", "rviz_default_plugins/Image", "rviz_default_plugins/PointCloud2",
            "rviz_default_plugins/Path", "rviz_default_plugins/Odometry"} <= set(displays)
    assert {"/easi3r/dynamic_mask", "/easi3r/depth", "/easi3r/odometry", "/easi3r/static_cloud",
            "/easi3r/static_map", "/easi3r/path"} <= topics
    maps = [d for d in vm["Displays"] if d.get("Topic", {}).get("Value") == "/easi3r/static_map"]
    assert maps[0]["Topic"]["Durability Policy"] == "Transient Local"


@pytest.mark.parametrize("module", ["easi3r_ros.ros.node", "easi3r_ros.ros.bag_player", "easi3r_ros.ros.demo"])
def test_console_scripts_have_help(module):
    import subprocess
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout
