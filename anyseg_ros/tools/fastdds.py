"""Which environment variable names Fast DDS's default XML profile file, per ROS 2 release.

Fast DDS 3 (Kilted and later, and the PyPI wheels) reads ``FASTDDS_DEFAULT_PROFILES_FILE``;
Fast DDS 2.x (Humble, Jazzy) only ``FASTRTPS_DEFAULT_PROFILES_FILE`` (Kilted's RMW also reads
the old name, with a warning). The launch file, the demo and the node benchmark give their
processes the package's large-frames profile through :func:`with_profile`.
"""
from __future__ import annotations

from typing import Mapping, MutableMapping

PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
FASTDDS2_DISTROS = ("foxy", "galactic", "humble", "iron", "jazzy")


def profile_variables(environment: Mapping[str, str], pip_wheels: bool = False
                      ) -> tuple[str, ...]:
    """The names to set for the running distribution's Fast DDS (``ROS_DISTRO``; both when
    it is unknown). ``pip_wheels``: rclpy is PyPI's ROS 2 wheels (Kilted, Fast DDS 3), which
    set no ROS_DISTRO: the new name only (the old one makes their RMW warn)."""
    distro = environment.get("ROS_DISTRO", "").strip().lower()
    if distro in FASTDDS2_DISTROS:
        return ("FASTRTPS_DEFAULT_PROFILES_FILE",)
    return ("FASTDDS_DEFAULT_PROFILES_FILE",) if distro or pip_wheels else PROFILE_VARIABLES


def rclpy_from_pip_wheels() -> bool:
    """Whether this Python's rclpy is PyPI's ``ros-rclpy`` wheel (no sourced ROS 2)."""
    import importlib.metadata

    try:
        importlib.metadata.version("ros-rclpy")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def profile_in_use(environment: Mapping[str, str]) -> bool:
    """Whether the environment already names a profile this distribution's Fast DDS reads."""
    names = profile_variables(environment)
    read = names if names == ("FASTRTPS_DEFAULT_PROFILES_FILE",) else PROFILE_VARIABLES
    return any(environment.get(name, "").strip() for name in read)


def with_profile(environment: MutableMapping[str, str], path: str,
                 keep_users: bool = True) -> MutableMapping[str, str]:
    """Point ``environment`` (changed in place and returned) at the profile ``path`` under
    every name its Fast DDS reads, unless ``keep_users`` and it already names one; the other
    name, if set, goes (Kilted's RMW would load a second profile from it)."""
    if keep_users and profile_in_use(environment):
        return environment
    wheels = not environment.get("ROS_DISTRO") and rclpy_from_pip_wheels()
    names = profile_variables(environment, pip_wheels=wheels)
    for name in PROFILE_VARIABLES:
        if name in names:
            environment[name] = str(path)
        else:
            environment.pop(name, None)
    return environment
