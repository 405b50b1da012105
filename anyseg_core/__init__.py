"""anyseg_core: anymodal semantic segmentation in pure PyTorch (no ROS imports).

The one path from raw sensor data to network input lives in :mod:`anyseg_core.sensors`;
the synthetic multi-sensor world in :mod:`anyseg_core.data.synthetic`.
"""

__version__ = "0.1.0"
