"""Launch easi3r_node (and optionally RViz).

    ros2 launch easi3r_ros easi3r.launch.py checkpoint:=/path/model.pth image_topic:=/camera/image_raw

Arguments: checkpoint, image_topic, camera_info_topic, params_file, base_frame, publish_odom_to_base_tf,
use_sim_time, rviz, random_weights. Empty checkpoint / base_frame / publish_odom_to_base_tf / random_weights keep
the params file's values.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

TRUE = ("true", "1", "yes", "on")
# The node's own default (easi3r_ros.ros.parameters), used when the params file does not set it.
SHUTDOWN_TIMEOUT_DEFAULT = 10.0


def _flag(context, name):
    # A real bool, not the string 'true': a string use_sim_time would not switch a node to /clock.
    return LaunchConfiguration(name).perform(context).strip().lower() in TRUE


def _have_package(name):
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    try:
        get_package_prefix(name)
        return True
    except (PackageNotFoundError, ValueError, OSError):
        return False


def _shutdown_timeout(params_file):
    """shutdown_timeout from the params file (any node section), else the node's default."""
    import yaml
    try:
        with open(params_file) as f:
            doc = yaml.safe_load(f) or {}
        for section in doc.values():
            value = ((section or {}).get("ros__parameters") or {}).get("shutdown_timeout")
            if value is not None:
                return float(value)
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        pass
    return SHUTDOWN_TIMEOUT_DEFAULT


def _easi3r_node(context, *args, **kwargs):
    # Only non-empty overrides are passed, so a value set in the params file is not replaced by the
    # argument's empty default.
    overrides = {"use_sim_time": _flag(context, "use_sim_time")}
    for name in ("checkpoint", "random_weights", "base_frame"):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    if LaunchConfiguration("publish_odom_to_base_tf").perform(context).strip():
        overrides["publish_odom_to_base_tf"] = _flag(context, "publish_odom_to_base_tf")
    image = LaunchConfiguration("image_topic").perform(context)
    params_file = LaunchConfiguration("params_file").perform(context)
    return [Node(
        package="easi3r_ros",
        executable="easi3r_node",
        name="easi3r",
        output="screen",
        parameters=[params_file, overrides],
        # At Ctrl-C the node publishes its trailing frames for up to shutdown_timeout seconds; launch's
        # default 5 s before escalating to SIGTERM would cut that short.
        sigterm_timeout=str(_shutdown_timeout(params_file) + 5.0),
        remappings=[
            ("image", image),
            ("image/compressed", image.rstrip("/") + "/compressed"),
            ("camera_info", LaunchConfiguration("camera_info_topic").perform(context)),
        ],
    )]


def _rviz(context, *args, **kwargs):
    if not _flag(context, "rviz"):
        return []
    if not _have_package("rviz2"):
        # Without rviz2 the node still runs: warn instead of aborting the whole launch.
        from launch.logging import get_logger
        get_logger("easi3r.launch").warning(
            "rviz:=true but the package 'rviz2' is not installed: starting without RViz")
        return []
    return [Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([FindPackageShare("easi3r_ros"), "config", "easi3r.rviz"])],
        parameters=[{"use_sim_time": _flag(context, "use_sim_time")}],
    )]


def generate_launch_description():
    share = FindPackageShare("easi3r_ros")
    return LaunchDescription([
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="DUSt3R/MonST3R checkpoint (.pth or Hugging Face folder); "
                                          "empty: the params file's value (empty there too: the shipped easi3r-tiny model)"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="input sensor_msgs/Image topic (its /compressed sibling with "
                                          "input_transport:=compressed)"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/camera_info",
                              description="input sensor_msgs/CameraInfo topic (optional)"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([share, "config", "easi3r.yaml"]),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("base_frame", default_value="",
                              description="robot body frame, e.g. base_link (empty: the params file's value)"),
        DeclareLaunchArgument("publish_odom_to_base_tf", default_value="",
                              description="false when the robot publishes odom -> base_frame itself (e.g. a bag "
                                          "with its own TF); empty: the params file's value"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (e.g. with `easi3r bag play --clock`)"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="start RViz with config/easi3r.rviz (a warning, no RViz, where rviz2 "
                                          "is not installed)"),
        DeclareLaunchArgument("random_weights", default_value="",
                              description="smoke test only: model preset with random weights (meaningless output)"),
        OpaqueFunction(function=_easi3r_node),
        OpaqueFunction(function=_rviz),
    ])
