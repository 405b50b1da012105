"""Files the package ships (config/): found in a source checkout, a pip install or a colcon
workspace alike."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The Fast DDS profile for full-size frames over shared memory (docs/ros.md, "Transport").
LARGE_FRAMES_PROFILE = "fastdds_large_frames.xml"


def shipped_config(name: str = "anyseg.yaml") -> Path:
    """config/NAME of a source checkout, else the installed share/anyseg_ros copy: under
    the interpreter's prefix (pip), or where the ament index puts the package (a colcon
    install, whose share/ lies in the workspace's install/ folder)."""
    places = [REPO / "config" / name,
              Path(sys.prefix) / "share" / "anyseg_ros" / "config" / name]
    for path in places:
        if path.is_file():
            return path
    try:  # a sourced colcon workspace
        from ament_index_python.packages import get_package_share_directory
        share = Path(get_package_share_directory("anyseg_ros"))
    except (ImportError, LookupError, OSError) as err:  # no ROS, not in the index, unset
        why = f" (ament index: {err})"
    else:
        path = share / "config" / name
        if path.is_file():
            return path
        places.append(path)
        why = ""
    raise FileNotFoundError(f"config/{name} not found in "
                            + ", ".join(str(p.parent) for p in places) + why)
