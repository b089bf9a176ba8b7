"""launch/easi3r.launch.py, config/easi3r.yaml and config/easi3r.rviz, checked without ``launch`` installed:
the launch file is parsed with ``ast`` and also evaluated against small stand-ins of the launch API, and
the params file is compared with the parameters the node declares (both ways). test_ros_launch.py runs the
launch file through the real launch API where it is installed."""
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
LAUNCH_ARGS = {"checkpoint", "image_topic", "camera_info_topic", "params_file", "base_frame", "use_sim_time", "rviz",
               "random_weights", "publish_odom_to_base_tf"}


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
    used |= {c.args[1].value for c in ast.walk(tree) if isinstance(c, ast.Call)   # _flag(context, "name")
             and getattr(c.func, "id", None) == "_flag" and isinstance(c.args[1], ast.Constant)}
    used |= {e.value for c in ast.walk(tree) if isinstance(c, ast.For) and isinstance(c.iter, ast.Tuple)
             for e in c.iter.elts if isinstance(e, ast.Constant)}   # for name in ("checkpoint", ...)
    assert {"params_file", "image_topic", "use_sim_time", "rviz", "base_frame", "random_weights",
            "publish_odom_to_base_tf"} <= used
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


class _Logger:
    def __init__(self):
        self.warnings = []

    def warning(self, msg, *args):
        self.warnings.append(msg % args if args else msg)


def _stub_modules():
    mods = {}
    for name in ("launch", "launch.actions", "launch.logging", "launch.substitutions", "launch_ros",
                 "launch_ros.actions", "launch_ros.substitutions"):
        mods[name] = types.ModuleType(name)
    mods["launch"].LaunchDescription = _Rec
    mods["launch.actions"].DeclareLaunchArgument = type("DeclareLaunchArgument", (_Rec,), {})
    mods["launch.actions"].OpaqueFunction = type("OpaqueFunction", (_Rec,), {})
    logger = _Logger()
    mods["launch.logging"].get_logger = lambda name=None: logger
    mods["launch.logging"].logger = logger
    mods["launch.substitutions"].LaunchConfiguration = _LaunchConfiguration
    mods["launch.substitutions"].PathJoinSubstitution = _PathJoin
    mods["launch_ros.actions"].Node = type("Node", (_Rec,), {})
    mods["launch_ros.substitutions"].FindPackageShare = _FindPackageShare
    return mods


def _load_launch(monkeypatch):
    mods = _stub_modules()
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("easi3r_launch_under_test", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    entities = ld.args[0]
    decl = {e.args[0]: e.kwargs.get("default_value") for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    context = types.SimpleNamespace(launch_configurations={})
    for k, v in decl.items():
        context.launch_configurations[k] = v.perform(context) if hasattr(v, "perform") else v

    def evaluate(**arguments):
        context.launch_configurations.update(arguments)
        return [a for e in entities if type(e).__name__ == "OpaqueFunction" for a in e.kwargs["function"](context)]
    return module, decl, context, evaluate, mods["launch.logging"].logger


def test_launch_file_evaluates_to_the_node_with_params_file(monkeypatch):
    module, decl, context, evaluate, logger = _load_launch(monkeypatch)
    assert LAUNCH_ARGS <= set(decl)
    assert Path(context.launch_configurations["params_file"]) == YAML
    nodes = evaluate(checkpoint="/models/x.pth", image_topic="/cam/image_raw")
    assert [n.kwargs["executable"] for n in nodes] == ["easi3r_node"]   # rviz defaults to false
    n = nodes[0].kwargs
    assert n["package"] == "easi3r_ros"
    params_file, overrides = n["parameters"]
    assert Path(params_file) == YAML and overrides["checkpoint"] == "/models/x.pth"
    # empty arguments leave the params file's values
    assert overrides["use_sim_time"] is False and "random_weights" not in overrides and "base_frame" not in overrides
    assert "publish_odom_to_base_tf" not in overrides
    assert set(overrides) - {"use_sim_time"} <= set(SPECS)
    remaps = dict(n["remappings"])
    assert remaps["image"] == "/cam/image_raw" and remaps["camera_info"] == "/camera/camera_info"
    # launch waits for the node's graceful shutdown before escalating to SIGTERM
    assert float(n["sigterm_timeout"]) > SPECS["shutdown_timeout"].default
    assert not logger.warnings


def test_sigterm_timeout_follows_the_params_file(monkeypatch, tmp_path):
    module, decl, context, evaluate, logger = _load_launch(monkeypatch)
    assert module.SHUTDOWN_TIMEOUT_DEFAULT == SPECS["shutdown_timeout"].default
    custom = tmp_path / "p.yaml"
    custom.write_text("/**:\n  ros__parameters:\n    shutdown_timeout: 30.0\n")
    node = evaluate(params_file=str(custom))[0]
    assert float(node.kwargs["sigterm_timeout"]) == 35.0
    custom.write_text("/**:\n  ros__parameters:\n    stride: 2\n")
    node = evaluate(params_file=str(custom))[0]
    assert float(node.kwargs["sigterm_timeout"]) == SPECS["shutdown_timeout"].default + 5.0


@pytest.mark.parametrize("value, expected", [("true", True), ("True", True), ("1", True), ("false", False),
                                             ("0", False)])
def test_launch_passes_use_sim_time_and_base_frame_typed(monkeypatch, value, expected):
    # use_sim_time must reach the node as a bool: the string 'true' would not switch it to /clock
    module, decl, context, evaluate, logger = _load_launch(monkeypatch)
    node = evaluate(use_sim_time=value, base_frame="base_link", publish_odom_to_base_tf=value)[0]
    overrides = node.kwargs["parameters"][1]
    assert overrides["use_sim_time"] is expected and overrides["base_frame"] == "base_link"
    assert overrides["publish_odom_to_base_tf"] is expected


def test_rviz_without_rviz2_warns_and_the_node_still_starts(monkeypatch):
    module, decl, context, evaluate, logger = _load_launch(monkeypatch)
    monkeypatch.setattr(module, "_have_package", lambda name: False)
    nodes = evaluate(rviz="true")
    assert [n.kwargs["executable"] for n in nodes] == ["easi3r_node"]
    assert len(logger.warnings) == 1 and "rviz2" in logger.warnings[0]


def test_rviz_with_rviz2_starts_it_with_the_config(monkeypatch):
    module, decl, context, evaluate, logger = _load_launch(monkeypatch)
    monkeypatch.setattr(module, "_have_package", lambda name: name == "rviz2")
    nodes = evaluate(rviz="true", use_sim_time="true")
    rviz = [x for x in nodes if x.kwargs["executable"] == "rviz2"][0]
    assert rviz.kwargs["arguments"][1].perform(context).endswith("config/easi3r.rviz")
    assert rviz.kwargs["parameters"] == [{"use_sim_time": True}]
    assert not logger.warnings


def test_have_package_is_false_for_a_missing_package():
    tree = ast.parse(LAUNCH.read_text())
    src = ast.get_source_segment(LAUNCH.read_text(), next(n for n in tree.body if isinstance(n, ast.FunctionDef)
                                                          and n.name == "_have_package"))
    scope = {}
    exec(src, scope)   # the helper alone: it needs ament_index_python, not launch
    assert scope["_have_package"]("no_such_package_easi3r_test") is False


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


def test_readme_topic_table_is_the_output_declaration():
    from easi3r_ros.ros.outputs import OUTPUTS, markdown_table
    assert markdown_table() in (REPO / "README.md").read_text()
    enables = {o.enable for o in OUTPUTS if o.enable}
    assert enables <= set(SPECS) and all(isinstance(SPECS[e].default, bool) for e in enables)
    assert len({o.topic for o in OUTPUTS}) == len(OUTPUTS)
