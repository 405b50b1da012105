"""Bags that ROS 2 Humble's rosbag2 reads: rosbag2 metadata version 8, not 9.

Humble's rosbag2 (0.15.x, which writes version 5) parses the metadata of any version, but
reads each topic's ``offered_qos_profiles`` as a YAML *string* whose QoS policies are
integers (rosbag2_storage/src/rosbag2_storage/metadata_io.cpp and
rosbag2_transport/src/rosbag2_transport/qos.cpp on the humble branch). Version 9 (Jazzy and
later) writes it as a YAML list with policy names, and Humble stops at
"Exception on parsing info file: yaml-cpp: ... bad conversion". rosbags writes versions 8 and 9
(``Writer(path, version=8)``); version 8 carries the QoS the old way. Humble cannot be run
here, so :func:`humble_reading_problems` transcribes what Humble's reader requires, and the
sqlite3 check lists the columns Humble's sqlite3 plugin selects.
"""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("rosbags", reason="rosbags is not installed (the data extra)")

from anyseg_ros.tools import bag as bags  # noqa: E402

# Humble's rmw QoS enums (rmw/types.h of humble): the values its rosbag2 converts back.
HUMBLE_QOS_MAX = {"history": 3, "reliability": 3, "durability": 3, "liveliness": 4}


def humble_reading_problems(bag: Path) -> list[str]:
    """What Humble's rosbag2 would fail on in ``bag``'s metadata.yaml ([] = it reads it)."""
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    problems = []

    def need(ok, what):
        if not ok:
            problems.append(what)

    version = info["version"]
    need(isinstance(version, int), "version is not an integer")
    need(isinstance(info["storage_identifier"], str), "storage_identifier")
    need(isinstance(info["duration"]["nanoseconds"], int), "duration")
    need(isinstance(info["starting_time"]["nanoseconds_since_epoch"], int), "starting_time")
    need(isinstance(info["message_count"], int), "message_count")
    need(all(isinstance(p, str) for p in info["relative_file_paths"]), "relative_file_paths")
    if version >= 3:
        need(isinstance(info["compression_format"], str)
             and isinstance(info["compression_mode"], str), "compression fields")
    if version >= 5:
        for f in info["files"]:
            need(isinstance(f["path"], str) and isinstance(f["message_count"], int)
                 and isinstance(f["starting_time"]["nanoseconds_since_epoch"], int)
                 and isinstance(f["duration"]["nanoseconds"], int), "files")
    for topic in info["topics_with_message_count"]:
        meta = topic["topic_metadata"]
        name = meta["name"]
        need(all(isinstance(meta[k], str) for k in ("name", "type", "serialization_format")),
             f"{name}: name, type, serialization_format")
        need(isinstance(topic["message_count"], int), f"{name}: message_count")
        if version < 4:
            continue
        qos = meta["offered_qos_profiles"]
        # yaml-cpp's as<std::string>() takes any scalar, not a list or a map
        if isinstance(qos, (list, dict)):
            problems.append(f"{name}: offered_qos_profiles is a YAML {type(qos).__name__}, "
                            "Humble reads a string")
            continue
        for profile in (yaml.safe_load(str(qos)) or []) if str(qos).strip() else []:
            for policy, top in HUMBLE_QOS_MAX.items():
                value = profile[policy]
                need(isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top,
                     f"{name}: {policy} {value!r} is not one of Humble's values")
            need(isinstance(profile["depth"], int), f"{name}: depth")
            for duration in ("deadline", "lifespan", "liveliness_lease_duration"):
                need(all(isinstance(profile[duration][k], int) for k in ("sec", "nsec")),
                     f"{name}: {duration}")
            need(isinstance(profile["avoid_ros_namespace_conventions"], bool),
                 f"{name}: avoid_ros_namespace_conventions")
    return problems


def _write(path: Path, version: int, storage: str) -> Path:
    """A tiny bag of the project's layout (a camera image and /tf_static), written with
    rosbags' Writer in ``version`` the way BagWriter writes (typestore, offered QoS)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = bags.typestore()
    image = bags.image_msg(np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3), "rgb8",
                           (1_700_000_000, 5), bags.FRAME_IDS["camera"])
    tf = ts.types["tf2_msgs/msg/TFMessage"](transforms=[])
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=version, storage_plugin=plugin) as writer:
        for topic, msg, t_ns in ((bags.TOPICS["tf_static"], tf, 1_700_000_000_000_000_000),
                                 (bags.TOPICS["camera"], image, 1_700_000_000_000_000_005)):
            msgtype = bags.MSGTYPES[topic]
            conn = writer.add_connection(topic, msgtype, typestore=ts,
                                         offered_qos_profiles=[bags.offered_qos(topic)])
            writer.write(conn, t_ns, ts.serialize_cdr(msg, msgtype))
    return path


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_version_8_bags_are_what_humble_reads(tmp_path, storage):
    bag = _write(tmp_path / "humble", 8, storage)
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 8
    assert humble_reading_problems(bag) == []
    # and the project reads it back like its own bags (play, process_bag)
    assert bags.bag_topics(bag) == {"/tf_static": ("tf2_msgs/msg/TFMessage", 1),
                                    "/camera/image": ("sensor_msgs/msg/Image", 1)}
    qos = bags.bag_offered_qos(bag)
    assert [q.durability.name for q in qos["/tf_static"]] == ["TRANSIENT_LOCAL"]
    image = next(m for m in bags.read_bag(bag) if m.topic == "/camera/image").decode()
    assert (image.height, image.width, image.encoding) == (4, 6, "rgb8")
    assert bytes(image.data) == bytes(range(72))


def test_version_9_bags_are_what_humble_cannot_read(tmp_path):
    """Why: the QoS of every topic is a YAML list in version 9."""
    bag = _write(tmp_path / "jazzy", 9, "mcap")
    problems = humble_reading_problems(bag)
    assert problems and all("offered_qos_profiles is a YAML list" in p for p in problems)


def test_version_8_sqlite3_has_the_columns_humble_selects(tmp_path):
    bag = _write(tmp_path / "humble", 8, "sqlite3")
    db, = bag.glob("*.db3")
    with sqlite3.connect(db) as connection:
        def columns(table):
            return {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}

        # rosbag2_storage_default_plugins/.../sqlite_storage.cpp (humble)
        assert {"id", "name", "type", "serialization_format",
                "offered_qos_profiles"} <= columns("topics")
        assert {"id", "topic_id", "timestamp", "data"} <= columns("messages")
        assert {"schema_version", "ros_distro"} <= columns("schema")
        (qos,) = connection.execute(
            "SELECT offered_qos_profiles FROM topics WHERE name = '/camera/image'").fetchone()
    profile, = yaml.safe_load(qos)
    assert profile["reliability"] == 1 and profile["durability"] == 2  # reliable, volatile


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_our_bags_convert_to_what_humble_reads(tmp_path, storage):
    """A bag BagWriter wrote (version 9) becomes one Humble reads with rosbags' own tool:
    rosbags-convert --src BAG --dst OUT --dst-version 8 --dst-storage sqlite3|mcap."""
    ts = bags.typestore()
    image = bags.image_msg(np.zeros((4, 6, 3), np.uint8), "rgb8", (1_700_000_000, 5),
                           bags.FRAME_IDS["camera"])
    source = tmp_path / "ours"
    with bags.BagWriter(source, storage="mcap") as writer:
        writer.write(bags.TOPICS["tf_static"], ts.types["tf2_msgs/msg/TFMessage"](transforms=[]),
                     1_700_000_000_000_000_000)
        writer.write(bags.TOPICS["camera"], image, 1_700_000_000_000_000_005)
    assert humble_reading_problems(source)  # what we write today: version 9
    out = tmp_path / "for_humble"
    convert = Path(sys.executable).with_name("rosbags-convert")
    command = ([str(convert)] if convert.exists()
               else [sys.executable, "-m", "rosbags.convert"])
    done = subprocess.run([*command, "--src", str(source), "--dst", str(out),
                           "--dst-version", "8", "--dst-storage", storage],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert humble_reading_problems(out) == []
    assert bags.bag_topics(out) == bags.bag_topics(source)
    assert [m.data for m in bags.read_bag(out)] == [m.data for m in bags.read_bag(source)]
    durability = {t: [q.durability.name for q in qos]
                  for t, qos in bags.bag_offered_qos(out).items()}
    assert durability == {"/tf_static": ["TRANSIENT_LOCAL"], "/camera/image": ["VOLATILE"]}


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_bag_version_8_writes_what_humble_reads(tmp_path, storage):
    """``--bag-version 8`` on the bag tools (here synthetic_bag's) writes a bag Humble's
    rosbag2 reads, with the same messages as the default version 9."""
    from anyseg_ros.tools.synthetic_bag import main as synthetic_bag_main

    written = {}
    for version in (8, 9):
        out = tmp_path / f"v{version}_{storage}"
        assert synthetic_bag_main([str(out), "--seconds", "0.2", "--size", "32", "48",
                                   "--storage", storage, "--bag-version", str(version),
                                   "--quiet"]) == 0
        info = yaml.safe_load((out / "metadata.yaml").read_text())
        assert info["rosbag2_bagfile_information"]["version"] == version
        written[version] = out
    assert humble_reading_problems(written[8]) == []
    assert humble_reading_problems(written[9])
    assert bags.bag_topics(written[8]) == bags.bag_topics(written[9])
    assert [m.data for m in bags.read_bag(written[8])] == \
        [m.data for m in bags.read_bag(written[9])]
    with pytest.raises(ValueError, match="bag version"):
        bags.BagWriter(tmp_path / "v7", version=7)
