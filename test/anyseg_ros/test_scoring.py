"""anyseg_ros.scoring: the one rule by which process_bag and the demo score outputs per phase.

The rule's parts on hand-made stamps (ground-truth matching, phases from what the faults
silenced, the scorer's tables), then the two tools on one synthetic bag with the same faults:
the demo's scoring (``demo._score``, fed process_bag's outputs as if the live node had made
them) must report what process_bag's summary reports, phase by phase.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from anyseg_ros.scoring import ALL_SENSORS, GroundTruth, PhaseScorer, PhaseSpans
from anyseg_ros.tools import bag as bags
from anyseg_ros.tools.process_bag import process_bag
from anyseg_ros.tools.shipped import shipped_config
from anyseg_ros.tools.synthetic_bag import write_synthetic_bag

NET_HW = (64, 96)  # the random checkpoint's size (conftest.py)
SLOP = 0.05


def _labels(value: int, shape=(4, 6)) -> np.ndarray:
    return np.full(shape, value, np.uint8)


# ---------------------------------------------------------------------- the rule's parts


def test_ground_truth_is_the_nearest_within_the_tolerance_earlier_on_a_tie():
    gt = GroundTruth()
    for stamp in (0.2, 0.0, 0.1):  # any order
        gt.add(stamp, _labels(int(stamp * 10)))
    assert gt.stamps == [0.0, 0.1, 0.2]
    assert gt.nearest(0.125, SLOP)[0] == 0.1
    assert gt.nearest(0.175, SLOP)[0] == 0.2
    assert gt.nearest(0.25, 0.0501)[0] == 0.2
    assert gt.nearest(-0.04, SLOP)[0] == 0.0
    assert gt.nearest(0.26, SLOP) is None and gt.nearest(-0.06, SLOP) is None
    tie = GroundTruth()
    tie.add(1.0, _labels(1))
    tie.add(2.0, _labels(2))
    assert tie.nearest(1.5, 0.5)[0] == 1.0  # the earlier one


def _observe_drive(spans: PhaseSpans, seconds: float = 2.0) -> None:
    """A drive's schedule, in receive order: camera at 0.1 k s received 0.01 s later, LiDAR
    at 0.037 + 0.1 k received 0.05 s later (as synthetic_bag writes them); the bag starts at
    0."""
    messages = []
    for k in range(int(seconds * 10) + 1):
        messages.append((0.1 * k + 0.01, "camera", 0.1 * k))
        messages.append((0.1 * k + 0.037 + 0.05, "lidar", 0.1 * k + 0.037))
    for received, sensor, stamp in sorted(messages):
        spans.observe(sensor, received, stamp)


def test_phases_are_named_on_the_stamps_the_faults_silenced():
    """lidar:0.45-1.05 (receive time) silences the sweeps received 0.487 .. 0.987, stamped
    0.437 .. 0.937; the phase spans 0.387 .. 0.987 on the stamp clock, and further for
    frames without the LiDAR until its sweep of 1.037."""
    spans = PhaseSpans({"lidar": [(0.45, 1.05)]}, SLOP, {})
    _observe_drive(spans)
    (window, (lo, hi)), = spans.spans.items()
    assert window == ("lidar", 0.45, 1.05) and (round(lo, 6), round(hi, 6)) == (0.437, 0.937)
    assert spans.back[window] == pytest.approx(1.037)
    name = "lidar off 0.45-1.05 s"
    assert spans.phase(0.3, ("camera",)) == ALL_SENSORS  # before the span
    assert spans.phase(0.4, ("camera", "lidar")) == name  # could have used 0.437
    assert spans.phase(0.98, ("camera", "lidar")) == name
    assert spans.phase(1.0, ("camera", "lidar")) == ALL_SENSORS  # has the LiDAR again
    assert spans.phase(1.0, ("camera",)) == name  # the LiDAR not back yet
    assert spans.phase(1.037, ("camera",)) == ALL_SENSORS
    assert spans.phase(1.0) == name  # a ground-truth tick: made of no silenced sensor
    # The names are presentation: the demo's label, same phases.
    short = PhaseSpans({"lidar": [(0.45, 1.05)]}, SLOP, {}, label="{sensor} off",
                       joiner=" + ")
    _observe_drive(short)
    for stamp in np.arange(0.0, 2.0, 0.01):
        for mods in ((), ("camera",), ("camera", "lidar")):
            assert short.phase(stamp, mods) == spans.phase(stamp, mods).replace(
                " 0.45-1.05 s", "")


def test_an_event_window_widens_the_phase_after_the_span():
    spans = PhaseSpans({"events": [(0.5, 1.0)]}, SLOP, {"events": 0.2})
    for k in range(200):
        spans.observe("events", 0.01 * k, 0.01 * k)
    assert spans.phase(1.18, ("camera", "events")) == "events off 0.5-1 s"  # 0.99 + 0.2
    assert spans.phase(1.2, ("camera", "events")) == ALL_SENSORS


def test_the_scorer_counts_every_output_and_scores_the_matched_ones():
    gt = GroundTruth()
    for k in range(10):
        gt.add(0.1 * k, _labels(k % 3))
    spans = PhaseSpans({"lidar": [(0.45, 1.05)]}, SLOP, {})
    _observe_drive(spans)
    scorer = PhaseScorer(spans, gt, SLOP, 19)
    assert scorer.add(0.2, ("camera", "lidar"), _labels(2)) == (ALL_SENSORS, 0.2)
    assert scorer.add(0.5, ("camera",), _labels(1)) == ("lidar off 0.45-1.05 s",
                                                        pytest.approx(0.5))
    assert scorer.add(0.3, ("camera", "lidar"), None)[1] is None  # labels not at hand
    assert scorer.add(0.4, ("camera", "lidar"), _labels(1, (2, 2)))[1] is None  # shape
    assert scorer.add(5.0, ("lidar",), _labels(0))[1] is None  # no ground truth near
    assert scorer.scored == 2
    assert dict(scorer.frames) == {ALL_SENSORS: 3, "lidar off 0.45-1.05 s": 2}
    assert dict(scorer.set_frames) == {"CL": 3, "C": 1, "L": 1}
    assert scorer.modalities(ALL_SENSORS) == {"CL": 2, "L": 1}
    assert scorer.miou(ALL_SENSORS) == 100.0 and scorer.miou("lidar off 0.45-1.05 s") == 0.0
    assert scorer.miou(key="C") == 0.0 and scorer.miou(key="L") is None
    assert scorer.ticks() == {ALL_SENSORS: 4, "lidar off 0.45-1.05 s": 6}  # 0.4 .. 0.9


# ---------------------------------------------------------------------- the two tools


# The camera's outage outlasts sync.stale_after (0.5 s): frames then form around the LiDAR.
FAULTS = "lidar:0.35-0.85,camera:1.15-2.05"


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    bag = tmp_path_factory.mktemp("scoring_bag") / "drive"
    info = write_synthetic_bag(bag, 2.5, "clear-day", None, 4, (48, 64), progress=False)
    return bag, info


def _demo_name(process_bag_name: str) -> str:
    """process_bag's name of a phase as the demo writes it ("lidar off 0.45-1.05 s" ->
    "lidar off"; phases in several windows joined with " + ")."""
    return re.sub(r" [0-9.]+-[0-9.]+ s", "", process_bag_name).replace(", ", " + ")


@pytest.mark.parametrize("slop", [0.04, 0.03])
def test_demo_and_process_bag_report_the_same_phases_and_miou(drive, checkpoint, tmp_path,
                                                               slop):
    """The demo's scoring and process_bag's summary on one bag with the same faults: the
    same outputs per phase, the same modalities, the same ground truth matched, the same
    mIoU. The node's parameters are the demo's (the shipped config and the bag's params),
    with slops away from the default: at 0.03 the frames around a LiDAR sweep (0.037 s from
    the ground truth) are not scored, which a fixed tolerance of 0.05 would score."""
    from anyseg_ros.tools import demo

    bag, info = drive
    values = demo.node_values([shipped_config(), info["params"]])
    values.update({"device": "cpu", "backend": "torch", "network.height": NET_HW[0],
                   "network.width": NET_HW[1], "sync.slop": slop})
    faults = bags.parse_windows(FAULTS)
    out = tmp_path / "out"
    summary = process_bag(bag, out, checkpoint, values, faults, progress=False)
    status = [json.loads(m.decode().data) for m in bags.read_bag(out, ["/anyseg/status"])]
    labels = [m.decode() for m in bags.read_bag(out, ["/anyseg/labels"])]
    assert len(status) == len(labels) == summary["frames_out"] >= 15

    score = demo._score(status, labels, bag, info["t_start"], faults, values, 19)

    phases = summary["phases"]
    assert {_demo_name(p) for p in phases} == {ALL_SENSORS, "lidar off", "camera off"}
    assert {_demo_name(p): row["frames"] for p, row in phases.items()} == dict(
        score["frames_out"])
    assert {_demo_name(p): row["modalities"] for p, row in phases.items()} == {
        p: {k: n for (q, k), n in sorted(score["used"].items()) if q == p}
        for p in score["frames_out"]}
    assert sum("gt_stamp" in s for s in status) == summary["scored"] > 0
    assert (summary["scored"] < summary["frames_out"]) == (slop < 0.037)
    demo_miou = {p: round(m, 2) for p, m in score["miou"].items()}
    assert {_demo_name(p): row["miou"] for p, row in phases.items()} == {
        p: demo_miou.get(p) for p in score["frames_out"]}
    assert sum(score["frames_in"].values()) == 26  # every ground-truth tick, in some phase
    # The montage's picks are scored frames of their phase.
    for phase, (name, s, _) in score["picks"].items():
        assert name == phase and "gt_stamp" in s
