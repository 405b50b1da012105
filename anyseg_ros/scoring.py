"""Segmentation outputs scored against a bag's ground truth, per phase of a run's faults: the
one rule ``process_bag`` and the demo share.

Faults are windows of receive time, in seconds from the bag's start (its first message):
``process_bag --faults`` silences the messages received in them, as ``play --drop`` does
live (what the demo replays its drive with). The same faults on the same bag therefore name
the same phases and score the same outputs the same way in both tools.

**Phases** are named on the stamp clock, the one frames are matched on
(:class:`PhaseSpans`): a fault window becomes the header stamps of the messages it
silenced, from the first to the last, widened by what the synchroniser matches
(``sync.slop`` before and after; the event window after, for windowed event streams). A
frame stamped in that span is in the window's phase: a frame that could have used a
silenced message, whatever the sensors' delays between stamp and receive time. So is a
frame after that span without the sensor, stamped before the sensor's first message after
the window (the sensor went stale in the outage and is not waited for until it is heard
again). A frame in no window's phase is in ``all sensors``; one in several is in all of
them (their names joined). A ground-truth tick, which has no modalities, is placed as a
frame made of none of the silenced sensors.

**Matching**: an output stamped ``s`` is scored against the ground-truth label whose stamp
is nearest ``s`` (the earlier on a tie), when that is within ``sync.slop`` of ``s`` and the
label has the output's shape; otherwise it is counted but not scored. The scored outputs
accumulate one confusion matrix per phase and one per set of modalities used; mIoU is
:class:`anyseg_core.metrics.ConfusionMatrix`'s (over the classes present, 255 ignored).
"""
from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from anyseg_core.metrics import ConfusionMatrix
from anyseg_core.modalities import ABBREV

from . import conversions as conv
from .params import synchronizer_from_params
from .tools import bag as bags

#: The phase of frames in no fault window's phase.
ALL_SENSORS = "all sensors"


def modality_key(modalities: Sequence[str]) -> str:
    """("camera", "lidar") -> "CL" (the tables' notation)."""
    return "".join(sorted(ABBREV[m] for m in modalities))


class GroundTruth:
    """The ground-truth labels of a bag by stamp, for scoring outputs made at nearby stamps."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.labels: list[np.ndarray] = []

    def add(self, stamp: float, labels: np.ndarray) -> None:
        i = bisect_left(self.stamps, stamp)
        self.stamps.insert(i, stamp)
        self.labels.insert(i, labels)

    def add_bag_message(self, m) -> Optional[str]:
        """A bag's ``sensor_msgs/Image`` of labels (mono8 or 8UC1; ``m`` as
        :func:`anyseg_ros.tools.bag.read_bag` yields it); returns None, or the reason it was
        refused (an :class:`~anyseg_ros.conversions.InvalidMessage` reason, else
        ``conversion_error``)."""
        try:
            msg = m.decode()
            labels, _ = conv.image_to_array(msg, ("mono8", "8UC1"))
            stamp = conv.stamp_to_sec(msg.header.stamp)
        except conv.InvalidMessage as e:
            return e.reason
        except Exception:  # noqa: BLE001 - a damaged message is not the run's end
            return "conversion_error"
        self.add(stamp, np.array(labels))
        return None

    def nearest(self, stamp: float, tolerance: float) -> Optional[tuple[float, np.ndarray]]:
        """(stamp, labels) of the label nearest ``stamp`` (the earlier on a tie), None when
        there is none within ``tolerance``."""
        i = bisect_left(self.stamps, stamp)
        best = min((j for j in (i - 1, i) if 0 <= j < len(self.stamps)),
                   key=lambda j: abs(self.stamps[j] - stamp), default=None)
        if best is None or abs(self.stamps[best] - stamp) > tolerance:
            return None
        return self.stamps[best], self.labels[best]


class PhaseSpans:
    """The header stamps of the messages each fault window silenced, and the phase of a frame
    from its stamp (see the module's docstring). ``label`` names one window (``sensor``,
    ``start``, ``end`` in seconds from the bag's start); ``joiner`` joins the names of a
    frame in several."""

    def __init__(self, faults: Mapping[str, Sequence[tuple[float, float]]], slop: float,
                 windows: Mapping[str, float], label: str = "{sensor} off {start:g}-{end:g} s",
                 joiner: str = ", ") -> None:
        self.faults = {key: list(spans) for key, spans in faults.items()}
        self.windows = [(key, a, b) for key, spans in sorted(faults.items()) for a, b in spans]
        self.slop, self.after = slop, dict(windows)  # sensor -> its event window
        self.label, self.joiner = label, joiner
        self.spans: dict[tuple, list[float]] = {}  # window -> [first, last] silenced stamp
        self.back: dict[tuple, float] = {}  # window -> stamp of the sensor's first message after

    @classmethod
    def for_params(cls, faults: Mapping, values: Mapping, modalities: Sequence[str],
                   **names) -> "PhaseSpans":
        """The spans for a node run with parameters ``values`` on ``modalities``: its
        ``sync.slop`` and its synchroniser's event window."""
        windows = synchronizer_from_params(values, modalities).windows
        return cls(faults, values["sync.slop"], windows, **names)

    def observe(self, sensor: str, t_rel: float, stamp: Optional[float],
                back: bool = True) -> bool:
        """A message of ``sensor`` received ``t_rel`` s after the bag's start, stamped
        ``stamp`` (None: too damaged to say); True when a fault window silences it. ``back``:
        whether the message, when not silenced, tells that the sensor is heard again."""
        if bags.in_windows(self.faults, sensor, t_rel):
            if stamp is not None:
                self.silenced(sensor, t_rel, stamp)
            return True
        if back and stamp is not None:
            self.kept(sensor, t_rel, stamp)
        return False

    def kept(self, sensor: str, t_rel: float, stamp: float) -> None:
        """A message of ``sensor`` received ``t_rel`` s after the start was not silenced."""
        for w in self.spans:
            if w[0] == sensor and w not in self.back and round(t_rel, 6) >= w[2]:
                self.back[w] = stamp

    def silenced(self, sensor: str, t_rel: float, stamp: float) -> None:
        for key, a, b in self.windows:
            if key == sensor and bags.in_windows({key: [(a, b)]}, key, t_rel):
                span = self.spans.setdefault((key, a, b), [stamp, stamp])
                span[0], span[1] = min(span[0], stamp), max(span[1], stamp)

    def name(self, key: str, a: float, b: float) -> str:
        """The name of the window of sensor ``key`` from ``a`` to ``b`` s."""
        return self.label.format(sensor=key, start=a, end=b)

    def phase(self, stamp: float, modalities: Sequence[str] = ()) -> str:
        """The phase of a frame stamped ``stamp`` made of ``modalities`` (by default none:
        how a ground-truth tick is placed)."""
        names: list[str] = []
        for (key, a, b), (lo, hi) in sorted(self.spans.items()):
            w = self.after.get(key)
            could_use = stamp < hi + w if w else stamp <= hi + self.slop
            not_back = key not in modalities and stamp < self.back.get((key, a, b), np.inf)
            name = self.name(key, a, b)
            if lo - self.slop <= stamp and (could_use or not_back) and name not in names:
                names.append(name)
        return self.joiner.join(names) if names else ALL_SENSORS


def scan_bag(bag: str | Path, spans: PhaseSpans, topics: Mapping[str, str],
             gt_topic: str = bags.TOPICS["gt"],
             info_topic: str = bags.TOPICS["camera_info"]) -> tuple[GroundTruth, Counter]:
    """A bag's ground truth, and its sensor messages observed by ``spans`` exactly as
    ``process_bag``'s loop observes them (``topics``: topic -> sensor; the CameraInfo
    is silenced with the camera but does not say it is back). Returns the ground truth and
    the ground-truth messages refused, by reason."""
    gt, refused = GroundTruth(), Counter()
    sensor_of = dict(topics)
    sensor_of.setdefault(info_topic, "camera")
    t_first: Optional[float] = None
    for m in bags.read_bag(bag, [*sensor_of, gt_topic]):
        now = m.time_ns * 1e-9
        if t_first is None:
            t_first = min(now, bags.bag_start_ns(bag) * 1e-9)
        if m.topic == gt_topic:
            reason = gt.add_bag_message(m)
            if reason is not None:
                refused[reason] += 1
            continue
        try:
            stamp: Optional[float] = conv.stamp_to_sec(m.decode().header.stamp)
        except Exception:  # noqa: BLE001 - too damaged to say, as in process_bag
            stamp = None
        spans.observe(sensor_of[m.topic], now - t_first, stamp, back=m.topic != info_topic)
    return gt, refused


class PhaseScorer:
    """Outputs counted per phase and per set of modalities used, and scored against the
    ground truth (see the module's docstring for the phase and the matching rules)."""

    def __init__(self, spans: PhaseSpans, gt: GroundTruth, tolerance: float,
                 num_classes: int) -> None:
        self.spans, self.gt, self.tolerance = spans, gt, tolerance
        self.num_classes = num_classes
        self.frames: Counter = Counter()  # phase -> outputs, in order of first output
        self.set_frames: Counter = Counter()  # modality key -> outputs
        self.phase_sets: Counter = Counter()  # (phase, modality key) -> outputs
        self.per_phase: dict[str, ConfusionMatrix] = {}
        self.per_set: dict[str, ConfusionMatrix] = {}
        self.scored = 0

    def add(self, stamp: float, modalities: Sequence[str],
            labels: Optional[np.ndarray]) -> tuple[str, Optional[float]]:
        """One output (``labels`` None: made, but its labels are not at hand); returns its
        phase and the stamp of the ground truth it was scored against (None: not scored)."""
        phase, key = self.spans.phase(stamp, modalities), modality_key(modalities)
        self.frames[phase] += 1
        self.set_frames[key] += 1
        self.phase_sets[(phase, key)] += 1
        match = None if labels is None else self.gt.nearest(stamp, self.tolerance)
        if match is None or match[1].shape != labels.shape:
            return phase, None
        self.scored += 1
        pred, truth = torch.from_numpy(labels), torch.from_numpy(match[1])
        for table, name in ((self.per_phase, phase), (self.per_set, key)):
            table.setdefault(name, ConfusionMatrix(self.num_classes)).update(pred, truth)
        return phase, match[0]

    def ticks(self) -> Counter:
        """The ground truth's ticks per phase (the frames in)."""
        return Counter(self.spans.phase(s) for s in self.gt.stamps)

    def miou(self, phase: Optional[str] = None, key: Optional[str] = None) -> Optional[float]:
        """mIoU in % of a phase (or of a set of modalities by ``key``); None when none of its
        outputs was scored."""
        cm = self.per_phase.get(phase) if key is None else self.per_set.get(key)
        return None if cm is None else 100.0 * float(cm.compute()["miou"])

    def modalities(self, phase: str) -> dict[str, int]:
        """modality key -> outputs of ``phase``, by key."""
        return {k: n for (p, k), n in sorted(self.phase_sets.items()) if p == phase}
