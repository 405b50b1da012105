"""Start the AnySeg segmentation node.

    ros2 launch anyseg_ros anyseg.launch.py
    ros2 launch anyseg_ros anyseg.launch.py checkpoint:=/models/anyseg.safetensors \\
        device:=cuda camera_image:=/front/image_raw lidar_points:=/velodyne_points

`ros2 launch anyseg_ros anyseg.launch.py --show-args` lists every argument.

The node gets the package's Fast DDS profile for large frames
(share/anyseg_ros/config/fastdds_large_frames.xml) unless the environment already names a
profile; `fastdds_profile:=/path/profile.xml` gives it another, `fastdds_profile:=none`
none (ros2launch refuses an empty `name:=`).
"""
import os

from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, GroupAction, OpaqueFunction,
                            SetEnvironmentVariable, UnsetEnvironmentVariable)
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from anyseg_ros.tools.fastdds import PROFILE_VARIABLES, profile_in_use, profile_variables

# (launch argument, topic name inside the node, what it carries). Each argument remaps the
# node's own topic name, so `camera_image:=/front/image_raw` points it at a driver's topic.
INPUT_TOPICS = [
    ('camera_image', 'camera/image', 'sensor_msgs/Image from the camera'),
    ('camera_info', 'camera/camera_info', 'sensor_msgs/CameraInfo of that camera'),
    ('lidar_points', 'lidar/points', 'sensor_msgs/PointCloud2 from the LiDAR'),
    ('events', 'events', 'event_camera_msgs/EventPacket from an event-camera driver (or a '
     'PointCloud2 x, y, t, p / a rendered Image: events.type)'),
    ('depth_image', 'depth/image', 'sensor_msgs/Image with depth (16UC1 mm or 32FC1 m)'),
]

# The variables naming Fast DDS's default XML profile, per distribution (Fast DDS 2 or 3).
SHIPPED_PROFILE = 'fastdds_large_frames.xml'


def _parse_bool(name, text):
    value = text.strip().lower()
    if value in ('true', '1', 'yes', 'on'):
        return True
    if value in ('false', '0', 'no', 'off'):
        return False
    raise ValueError(f"launch argument {name}:={text!r} must be 'true' or 'false'")


def _fastdds_profile(context, value):
    """SetEnvironmentVariable actions giving the node the Fast DDS profile `value`.

    auto: the package's profile, unless the environment already names one (kept as it is);
    none (or empty, from Python callers: ros2launch refuses `name:=`): nothing is set; a
    path: that file, whatever the environment says.
    """
    value = value.strip()
    environment = context.environment
    names = profile_variables(environment)
    if value.lower() in ('', 'none'):
        return []
    if value.lower() == 'auto':
        if profile_in_use(environment):  # a profile the user's Fast DDS reads already
            return []
        path = os.path.join(FindPackageShare('anyseg_ros').perform(context), 'config',
                            SHIPPED_PROFILE)
    else:
        path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isfile(path):
        raise ValueError(f'launch argument fastdds_profile:={value!r}: no such file {path}')
    # The other name, if set, goes: Kilted's RMW would load a second profile from it.
    return ([SetEnvironmentVariable(name, path) for name in names]
            + [UnsetEnvironmentVariable(name) for name in PROFILE_VARIABLES
               if name not in names and name in environment])


def _anyseg_node(context):
    """Build the node once the argument values are known.

    checkpoint, device and use_sim_time override the parameters file only when they are
    given (their defaults are empty), so that values set in a user's own params_file are not
    replaced by launch defaults.
    """
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {}
    if arg('use_sim_time').strip():
        overrides['use_sim_time'] = _parse_bool('use_sim_time', arg('use_sim_time'))
    for name in ('checkpoint', 'device'):
        value = arg(name).strip()
        if value:
            # value_type=str: a path such as "2024" or "yes" must stay a string.
            overrides[name] = ParameterValue(value, value_type=str)

    # managed: the lifecycle node (anyseg_ros.lifecycle), for a lifecycle manager to bring up
    node = Node(
        package='anyseg_ros',
        executable='anyseg_node',
        arguments=['--managed'] if _parse_bool('managed', arg('managed')) else [],
        name='anyseg',
        namespace=arg('namespace'),
        parameters=[arg('params_file'), overrides],
        remappings=[(topic, arg(argument)) for argument, topic, _ in INPUT_TOPICS],
        output='screen',
        emulate_tty=True,
    )
    profile = _fastdds_profile(context, arg('fastdds_profile'))
    if not profile:
        return [node]
    # A scoped group: the variables reach this node only, not the processes that a launch
    # file including this one starts after it.
    return [GroupAction([*profile, node], scoped=True, forwarding=True)]


def generate_launch_description():
    arguments = [
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution(
                [FindPackageShare('anyseg_ros'), 'config', 'anyseg.yaml']),
            description='YAML file with the node parameters'),
        DeclareLaunchArgument(
            'checkpoint', default_value='',
            description='.safetensors checkpoint; empty = the one in params_file '
                        '(there, empty = the bundled demo checkpoint)'),
        DeclareLaunchArgument(
            'device', default_value='',
            description='auto | cpu | cuda | cuda:N; empty = the one in params_file '
                        '(auto in the shipped config/anyseg.yaml)'),
        DeclareLaunchArgument(
            'namespace', default_value='',
            description='namespace of the node and of its relative topic names'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='',
            description='use /clock (true when replaying a bag with --clock); empty = the '
                        'one in params_file (false when it has none)'),
        DeclareLaunchArgument(
            'managed', default_value='false',
            description='true = a lifecycle node (configure loads the model, activate opens '
                        'the topics; for a lifecycle manager such as Nav2\'s); false = the '
                        'node runs from the start'),
        DeclareLaunchArgument(
            'fastdds_profile', default_value='auto',
            description='Fast DDS XML profile for the node: auto = the package\'s '
                        f'config/{SHIPPED_PROFILE} (shared memory sized for full-size frames) '
                        'unless FASTDDS_DEFAULT_PROFILES_FILE or FASTRTPS_DEFAULT_PROFILES_FILE '
                        'is set already; a path = that file; none = no profile'),
    ]
    arguments += [
        DeclareLaunchArgument(argument, default_value=topic, description=f'topic: {what}')
        for argument, topic, what in INPUT_TOPICS
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_anyseg_node)])
