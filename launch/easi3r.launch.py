"""Launch easi3r_node (and optionally RViz).

    ros2 launch easi3r_ros easi3r.launch.py checkpoint:=/path/model.pth image_topic:=/camera/image_raw

Arguments: checkpoint, image_topic, camera_info_topic, params_file, use_sim_time, rviz, random_weights.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def _easi3r_node(context, *args, **kwargs):
    # Only non-empty overrides are passed, so a checkpoint set in the params file is not replaced by
    # the argument's empty default.
    overrides = {"use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1")}
    for name in ("checkpoint", "random_weights"):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    image = LaunchConfiguration("image_topic").perform(context)
    return [Node(
        package="easi3r_ros",
        executable="easi3r_node",
        name="easi3r",
        output="screen",
        parameters=[LaunchConfiguration("params_file").perform(context), overrides],
        remappings=[
            ("image", image),
            ("image/compressed", image.rstrip("/") + "/compressed"),
            ("camera_info", LaunchConfiguration("camera_info_topic").perform(context)),
        ],
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
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (e.g. with `easi3r bag play --clock`)"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz with config/easi3r.rviz"),
        DeclareLaunchArgument("random_weights", default_value="",
                              description="smoke test only: model preset with random weights (meaningless output)"),
        OpaqueFunction(function=_easi3r_node),
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", PathJoinSubstitution([share, "config", "easi3r.rviz"])],
            parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])
