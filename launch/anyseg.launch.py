"""Start the AnySeg segmentation node.

    ros2 launch anyseg_ros anyseg.launch.py
    ros2 launch anyseg_ros anyseg.launch.py checkpoint:=/models/anyseg.safetensors \\
        device:=cuda camera_image:=/front/image_raw lidar_points:=/velodyne_points

`ros2 launch anyseg_ros anyseg.launch.py --show-args` lists every argument.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

# (launch argument, topic name inside the node, what it carries). Each argument remaps the
# node's own topic name, so `camera_image:=/front/image_raw` points it at a driver's topic.
INPUT_TOPICS = [
    ('camera_image', 'camera/image', 'sensor_msgs/Image from the camera'),
    ('camera_info', 'camera/camera_info', 'sensor_msgs/CameraInfo of that camera'),
    ('lidar_points', 'lidar/points', 'sensor_msgs/PointCloud2 from the LiDAR'),
    ('events', 'events', 'events as sensor_msgs/PointCloud2 (x, y, t, p) or a rendered Image'),
    ('depth_image', 'depth/image', 'sensor_msgs/Image with depth (16UC1 mm or 32FC1 m)'),
]


def _parse_bool(name, text):
    value = text.strip().lower()
    if value in ('true', '1', 'yes', 'on'):
        return True
    if value in ('false', '0', 'no', 'off'):
        return False
    raise ValueError(f"launch argument {name}:={text!r} must be 'true' or 'false'")


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

    return [Node(
        package='anyseg_ros',
        executable='anyseg_node',
        name='anyseg',
        namespace=arg('namespace'),
        parameters=[arg('params_file'), overrides],
        remappings=[(topic, arg(argument)) for argument, topic, _ in INPUT_TOPICS],
        output='screen',
        emulate_tty=True,
    )]


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
    ]
    arguments += [
        DeclareLaunchArgument(argument, default_value=topic, description=f'topic: {what}')
        for argument, topic, what in INPUT_TOPICS
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_anyseg_node)])
