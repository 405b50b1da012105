"""A procedural multi-sensor driving world (camera, depth, LiDAR, events) that behaves like
MUSES at the level of raw sensor data. See docs/synthetic-world.md."""
from .conditions import Condition, all_conditions, sample_condition
from .rig import RigConfig, SampleOptions, render_frame
from .scene import Scene, generate_scene
from .sequence import SensorMessage, drive, drive_calibration
from .dataset import SyntheticDataset, collate, sample_seed

__all__ = ["Condition", "RigConfig", "SampleOptions", "Scene", "SensorMessage",
           "SyntheticDataset", "all_conditions", "collate", "drive", "drive_calibration",
           "generate_scene", "render_frame", "sample_condition", "sample_seed"]
