"""Tools around the node, beside its path: rosbag2 files (``bag``), synthetic drives and MUSES
scenes as bags (``synthetic_bag``, ``muses_to_bag``), replay with faults (``play``), the
node's session run offline over a bag (``process_bag``) and the out-of-the-box demo (``demo``).
Each is a module with a command line: ``python -m anyseg_ros.tools.<name> --help``.
"""
