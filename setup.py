"""Packaging for anyseg_ros: one ament_python package, two Python packages.

The same file serves two installers:
- colcon (ament_python) in a sourced ROS 2 workspace, which reads data_files to lay out
  share/anyseg_ros and the ament index marker, and setup.cfg to put executables in
  lib/anyseg_ros where `ros2 run` / `ros2 launch` look for them;
- pip, which installs the same wheel into a virtual environment (see docs/installation.md).
"""
from glob import glob

from setuptools import find_packages, setup

package_name = 'anyseg_ros'

setup(
    name=package_name,
    version='0.1.0',  # keep equal to <version> in package.xml (test/test_packaging.py checks)
    description='Semantic segmentation from any subset of camera, LiDAR, events and depth, '
                'with a ROS 2 node',
    license='Apache-2.0',
    maintainer='AnySeg maintainers',
    maintainer_email='anyseg-maintainers@example.com',
    python_requires='>=3.10',
    packages=find_packages(include=['anyseg_core', 'anyseg_core.*',
                                    'anyseg_ros', 'anyseg_ros.*']),
    # The demo checkpoint (`make demo-checkpoint`) ships inside the package, so the node
    # finds it beside its own module in both a pip and a colcon install.
    package_data={package_name: ['checkpoints/*.safetensors', 'checkpoints/*.json']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml') + glob('config/*.xml')),
    ],
    # Only what every install needs. OpenCV is in the `cv` extra, not here: on a ROS
    # machine apt's python3-opencv provides cv2 without pip metadata, and a pip OpenCV next
    # to it would shadow or clash with it (docs/installation.md).
    install_requires=[
        'numpy',
        'pyyaml',
        'tqdm',
        'safetensors',
        'timm',
        'torch>=2.1',
        'torchvision',
    ],
    extras_require={
        'cv': ['opencv-python-headless'],
        # ROS 2 Kilted wheels from PyPI, for machines without a ROS install.
        'ros': [
            'ros-rclpy',
            'ros-sensor-msgs',
            'ros-std-msgs',
            'ros-diagnostic-msgs',
            'ros-geometry-msgs',  # TransformStamped; tf2_msgs is built on it (make setup)
            'ros-rmw-fastrtps-cpp',
        ],
        # Dataset readers (MUSES / DELIVER archives, rosbag2 without ROS).
        'data': ['h5py', 'hdf5plugin', 'rosbags'],
        'test': ['pytest', 'hypothesis', 'pytest-timeout'],
    },
    entry_points={
        'console_scripts': [
            'anyseg_synthetic = anyseg_core.data.synthetic.__main__:main',
            'anyseg_node = anyseg_ros.node:main',
        ],
    },
    zip_safe=False,
)
