"""Packaging for anyseg_ros: one ament_python package, two Python packages.

The same file serves two installers:
- colcon (ament_python) in a sourced ROS 2 workspace, which reads data_files to lay out
  share/anyseg_ros and the ament index marker, and setup.cfg to put executables in
  lib/anyseg_ros where `ros2 run` / `ros2 launch` look for them;
- pip, which installs the same wheel into a virtual environment (see docs/installation.md).
"""
import os
from glob import glob

from setuptools import find_packages, setup
from setuptools.command.develop import develop
from setuptools.command.install_scripts import install_scripts

package_name = 'anyseg_ros'

# The tools' console scripts. pip puts console scripts on the environment's PATH, so there
# every name carries the prefix (`play` is also SoX's player). `ros2 run anyseg_ros play`
# looks for lib/anyseg_ros/play instead: a colcon build, whose executables setup.cfg sends to
# lib/anyseg_ros, also gets each tool under its short name there (ROS_EXECUTABLES). Those are
# written by setuptools' own script installers (setup.py install / develop, which colcon
# runs); a wheel has no scripts of its own (pip writes them from the entry points), so the
# short names never reach a pip install.
TOOLS = ('play', 'process_bag', 'muses_to_bag', 'synthetic_bag', 'demo')
CONSOLE_SCRIPTS = [
    'anyseg_synthetic = anyseg_core.data.synthetic.__main__:main',
    'anyseg_node = anyseg_ros.node:main',
    *(f'anyseg_{tool} = anyseg_ros.tools.{tool}:main' for tool in TOOLS),
]
ROS_EXECUTABLES = {tool: f'anyseg_{tool}' for tool in TOOLS}  # short name: console script


def _write_ros_executables(directory, write_script):
    """Write each ROS_EXECUTABLES name as a copy of its console script in ``directory``."""
    for name, script in ROS_EXECUTABLES.items():
        with open(os.path.join(directory, script), encoding='utf-8') as f:
            write_script(name, f.read())


class InstallScripts(install_scripts):
    """colcon's `setup.py install`: the console scripts, then the ROS short names."""

    def run(self):
        super().run()
        if not self.no_ep:  # no_ep: a wheel (bdist_wheel, editable_wheel) writes no scripts
            _write_ros_executables(self.install_dir, self.write_script)


class Develop(develop):
    """colcon's `setup.py develop` (--symlink-install, setuptools < 80): the same."""

    def install_wrapper_scripts(self, dist):
        super().install_wrapper_scripts(dist)
        ours = dist.project_name.replace('-', '_') == package_name  # not a dependency
        if ours and not self.exclude_scripts:
            _write_ros_executables(self.script_dir, self.write_script)


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
            'ros-lifecycle-msgs',  # anyseg_node --managed (rclpy.lifecycle's services)
            'ros-geometry-msgs',  # TransformStamped; tf2_msgs is built on it (make setup)
            'ros-rmw-fastrtps-cpp',
        ],
        # Exported inference (anyseg_core.deploy): ONNX export, ONNX Runtime, OpenVINO. For
        # CUDA / TensorRT install onnxruntime-gpu instead of onnxruntime.
        'deploy': ['onnx', 'onnxscript', 'onnxruntime', 'openvino'],
        # Dataset readers (MUSES / DELIVER archives, rosbag2 without ROS).
        'data': ['h5py', 'hdf5plugin', 'rosbags'],
        # The Rust EVT 3.0 decoder (Prophesee cameras; about 6x the numpy fallback's rate).
        # Wheels only for glibc >= 2.34 (and macOS, Windows): where pip finds none, the node
        # decodes EVT 3.0 with numpy (`make setup` tries it and goes on without it).
        'events': ['evt3>=0.4'],
        # pytest-random-order: `make test PYTEST_ARGS=--random-order` shuffles the tests
        # (off unless asked) to show that none depends on another's order.
        'test': ['pytest', 'hypothesis', 'pytest-timeout', 'pytest-random-order'],
    },
    entry_points={'console_scripts': CONSOLE_SCRIPTS},
    cmdclass={'install_scripts': InstallScripts, 'develop': Develop},
    zip_safe=False,
)
