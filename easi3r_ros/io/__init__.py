"""Readers and writers of the offline tools (no ROS imports; OpenCV and rosbags are imported lazily)."""
from .frames import Frame, InputError, check_same_size, open_frames
from .image_codec import ImageCodecError, ImageFields, array_to_fields, fields_to_array, to_rgb8

__all__ = ["Frame", "InputError", "check_same_size", "open_frames", "ImageCodecError",
           "ImageFields", "array_to_fields", "fields_to_array", "to_rgb8"]
