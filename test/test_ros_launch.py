"""The package as ROS 2 tools see it in the venv route, and the launch file through the real launch API.

Always run (no ROS tools needed): scripts/bootstrap.sh lays the venv out as colcon lays out an install prefix
(lib/easi3r_ros/<executables>, share/easi3r_ros/{launch,config}, the ament index marker), and ament_index finds it
from an interpreter started with no AMENT_PREFIX_PATH at all.

Run where ``launch`` / ``launch_ros`` (and ``ros2cli``) are importable, skipped with the reason otherwise: no
registry ships them for the venv route; README, "Checking the launch file with the real ROS 2 tools", builds them
from their public sources outside the checkout.
"""
import filecmp
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ros_testing import Listener, child_env, next_domain, wait_until

REPO = Path(__file__).resolve().parents[1]
PREFIX = Path(sys.prefix)
EXECUTABLES = ("easi3r_node", "easi3r")
SHARED = ("launch/easi3r.launch.py", "config/easi3r.yaml", "config/easi3r.rviz")

needs_venv = pytest.mark.skipif(sys.prefix == sys.base_prefix,
                                reason="not running in a virtual environment (the venv route's layout is checked)")


def _env_without_ament():
    env = dict(os.environ)
    env.pop("AMENT_PREFIX_PATH", None)
    # a fresh start, as from a user's shell: the wheels' bootstrap runs again and sets its own library path
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    return env


@needs_venv
def test_venv_has_the_colcon_install_layout():
    for exe in EXECUTABLES:
        path = PREFIX / "lib" / "easi3r_ros" / exe
        assert path.is_file() and os.access(path, os.X_OK), f"{path} missing or not executable: run scripts/bootstrap.sh"
        first = path.read_text().splitlines()[0]
        assert first == f"#!{PREFIX / 'bin' / 'python'}" or Path(first[2:]).resolve() == Path(sys.executable).resolve(), first
    assert (PREFIX / "share" / "ament_index" / "resource_index" / "packages" / "easi3r_ros").is_file()
    for rel in SHARED + ("package.xml",):
        installed = PREFIX / "share" / "easi3r_ros" / rel
        assert installed.is_file(), f"{installed} missing: run scripts/bootstrap.sh"
        # a stale copy would make `ros2 launch` run an older launch file than the checkout's
        assert filecmp.cmp(installed, REPO / rel, shallow=False), f"{installed} differs from the checkout: run scripts/bootstrap.sh"


@needs_venv
def test_ament_index_finds_the_package_without_ament_prefix_path():
    code = ("import json, os\n"
            "from ament_index_python.packages import get_package_prefix, get_package_share_directory\n"
            "print(json.dumps([os.environ.get('AMENT_PREFIX_PATH'), get_package_prefix('easi3r_ros'),\n"
            "                  get_package_share_directory('easi3r_ros')]))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd="/", env=_env_without_ament(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ament, prefix, share = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(ament).resolve() == PREFIX.resolve()
    assert Path(prefix).resolve() == PREFIX.resolve() and Path(share).resolve() == (PREFIX / "share" / "easi3r_ros").resolve()


@needs_venv
def test_lib_executable_runs_the_checkout():
    # what `ros2 run easi3r_ros easi3r_node` and launch_ros execute
    out = subprocess.run([str(PREFIX / "lib" / "easi3r_ros" / "easi3r_node"), "--help"], cwd="/",
                         env=_env_without_ament(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: easi3r_node" in out.stdout


def _ros2(*args, timeout=120):
    code = "import sys; from ros2cli.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], cwd="/", env=_env_without_ament(),
                          capture_output=True, text=True, timeout=timeout)


def test_ros2_run_and_pkg_find_the_executables():
    pytest.importorskip("ros2cli", reason="ros2cli is not installed (no wheel; see README for a source install)")
    pytest.importorskip("ros2run", reason="ros2run is not installed (no wheel; see README for a source install)")
    pytest.importorskip("ros2pkg", reason="ros2pkg is not installed (no wheel; see README for a source install)")
    out = _ros2("pkg", "executables", "easi3r_ros")
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) == {"easi3r_ros", *EXECUTABLES}
    out = _ros2("run", "easi3r_ros", "easi3r_node", "--help")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "usage: easi3r_node" in out.stdout


# A launch of the installed share/easi3r_ros/launch/easi3r.launch.py through launch.LaunchService, as
# `ros2 launch easi3r_ros easi3r.launch.py ARGS` does; it reports the processes it starts and their exits.
DRIVER = r'''
import json, os, sys
import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription, RegisterEventHandler
from launch.event_handlers import OnProcessExit, OnProcessStart
from launch.launch_description_sources import PythonLaunchDescriptionSource


def say(**kw):
    print("EVENT " + json.dumps(kw), flush=True)


def on_start(event, context):
    cmd = list(event.cmd)
    params = []
    for i, a in enumerate(cmd[:-1]):
        if a == "--params-file":
            with open(cmd[i + 1]) as f:
                params.append([cmd[i + 1], yaml.safe_load(f)])
    say(kind="start", name=event.action.name, cmd=cmd, params=params)


def on_exit(event, context):
    say(kind="exit", name=event.action.name, code=event.returncode)


launch_file = os.path.join(get_package_share_directory("easi3r_ros"), "launch", "easi3r.launch.py")
ld = LaunchDescription([
    RegisterEventHandler(OnProcessStart(on_start=on_start)),
    RegisterEventHandler(OnProcessExit(on_exit=on_exit)),
    IncludeLaunchDescription(PythonLaunchDescriptionSource(launch_file),
                             launch_arguments=[a.split(":=", 1) for a in sys.argv[1:]]),
])
service = LaunchService()
service.include_launch_description(ld)
sys.exit(service.run())
'''


def _installed(package):
    from ament_index_python.packages import get_packages_with_prefixes
    return package in get_packages_with_prefixes()


def _get_parameters(listener, names, timeout=30.0):
    from rcl_interfaces.srv import GetParameters
    client = listener.node.create_client(GetParameters, "/easi3r/get_parameters")
    try:
        wait_until(client.service_is_ready, timeout, what="/easi3r/get_parameters")
        future = client.call_async(GetParameters.Request(names=list(names)))
        wait_until(future.done, timeout, what="the parameter reply")
        return dict(zip(names, future.result().values))
    finally:
        listener.node.destroy_client(client)


@pytest.mark.ros
@needs_venv
def test_launch_file_through_the_real_launch_api(tmp_path):
    # importorskip("launch") alone is not enough: the checkout's launch/ folder imports as a namespace package
    pytest.importorskip("launch.launch_service",
                        reason="the launch package is not installed (no wheel; see README for a source install)")
    pytest.importorskip("launch_ros.actions",
                        reason="launch_ros is not installed (no wheel; see README for a source install)")
    from rcl_interfaces.msg import ParameterType

    domain = next_domain()
    env = child_env(domain)
    env.pop("AMENT_PREFIX_PATH", None)   # the venv's default must be enough
    args = ["random_weights:=tiny-224-linear", "use_sim_time:=true", "base_frame:=base_link",
            "publish_odom_to_base_tf:=false"]
    without_rviz = not _installed("rviz2")
    if without_rviz:   # with rviz2 installed this would open a window
        args.append("rviz:=true")
    log_path = tmp_path / "launch.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", DRIVER, *args], cwd=tmp_path, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    listener = Listener(domain)
    try:
        def up():
            return proc.poll() is not None or ("easi3r", "/") in listener.node.get_node_names_and_namespaces()
        wait_until(up, 180, step=0.2, what="the node /easi3r on the graph")
        assert proc.poll() is None, f"the launch ended (exit {proc.returncode}):\n{log_path.read_text()[-4000:]}"
        values = _get_parameters(listener, ["use_sim_time", "base_frame", "random_weights", "publish_odom_to_base_tf"])
        # use_sim_time reaches the node as a bool (a string 'true' would leave it on the wall clock)
        assert values["use_sim_time"].type == ParameterType.PARAMETER_BOOL and values["use_sim_time"].bool_value
        assert values["base_frame"].string_value == "base_link"
        assert values["random_weights"].string_value == "tiny-224-linear"
        assert values["publish_odom_to_base_tf"].type == ParameterType.PARAMETER_BOOL
        assert not values["publish_odom_to_base_tf"].bool_value
    finally:
        listener.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)   # what Ctrl-C does to `ros2 launch`
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    text = log_path.read_text()
    events = [json.loads(line.split("EVENT ", 1)[1]) for line in text.splitlines() if line.startswith("EVENT ")]
    starts = [e for e in events if e["kind"] == "start"]
    assert len(starts) == 1, text[-4000:]   # the node, and no RViz
    cmd = starts[0]["cmd"]
    assert Path(cmd[0]) == PREFIX / "lib" / "easi3r_ros" / "easi3r_node", cmd
    files = [c for c in cmd if c.endswith("config/easi3r.yaml")]
    assert files and Path(files[0]).resolve() == (PREFIX / "share" / "easi3r_ros" / "config" / "easi3r.yaml").resolve()
    # the params file, then the launch file's overrides (written by launch_ros to a temporary file)
    (first, _), (_, generated) = starts[0]["params"]
    assert first == files[0]
    overrides = {k: v for section in generated.values() for k, v in section.get("ros__parameters", {}).items()}
    assert overrides["use_sim_time"] is True and overrides["base_frame"] == "base_link", overrides
    assert overrides["publish_odom_to_base_tf"] is False, overrides
    assert "checkpoint" not in overrides   # the empty argument leaves the params file's value
    if without_rviz:
        assert "package 'rviz2' is not installed: starting without RViz" in text, text[-4000:]
        assert "Caught exception" not in text, text[-4000:]
    assert any(e["kind"] == "exit" and e["name"] == starts[0]["name"] for e in events), text[-4000:]
    assert proc.returncode == 0, text[-4000:]
