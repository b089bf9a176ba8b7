"""The ROS 2 layer (the only sub-package that imports rclpy and ROS messages): the node, its parameters,
message conversions, TF, diagnostics, the bag player and the demo. Modules import rclpy lazily where
they can, so ``--help`` and the ROS-free helpers work without a ROS environment."""
