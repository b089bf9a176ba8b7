"""easi3r_ros: Easi3R dynamic-object masks and camera poses for ROS 2.

The algorithm core (``model``, ``motion``, ``align``, ``pipeline``, ``io``) imports no ROS;
``easi3r_ros.ros`` is the only sub-package that touches rclpy.
"""
# Interfaces generated from msg/ are installed as ``easi3r_ros.msg`` into the environment's
# site-packages; extend the package path so they are found when this source tree is imported first.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__version__ = "0.1.0"
