"""Benchmark decoding event_camera_msgs/EventPacket, per encoding, and decode + render.

    python benchmarks/bench_event_decode.py [--events N] [--packets P] [--repeats R]

Workload: N events (default 1 M) over 100 ms of a 1280 x 720 sensor (a busy Prophesee scene
streams about 10 M events/s), uniform pixels and polarities, sorted times, split into P
packets (default 100: 1 ms of events each, metavision_driver's default packet time). Encoded as each driver would: evt3 by this project's encoder (one
ADDR_X per event: no vectors, the worst case for a decoder), libcaer (8 bytes an event), mono
(8 bytes). libcaer_cmp has no encoder here and is timed on the real DAVIS346 recording
(../shared/data/real/event_camera_bags/test_events_2, 571 k events), when it is there.

Timed, in turn in one process (``measure`` of bench_sensors: blocks of calls, each warmed by
itself): a fresh :class:`~anyseg_ros.events.EventDecoder` decoding every packet, for evt3 with
the evt3 package (when installed) and with numpy; and decode (the fastest evt3 decoder) +
``render_events`` of the N events into one 1280 x 720 event frame (window 100 ms, as the
packets span). Rates are events per second of the median time; ratios against the evt3
package's rate where it is installed. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_sensors import measure  # noqa: E402

from anyseg_core.sensors.events import render_events  # noqa: E402
from anyseg_ros.events import EventDecoder, encode_evt3  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CMP_BAG = REPO.parent / "shared" / "data" / "real" / "event_camera_bags" / "test_events_2"
H, W = 720, 1280


def packet(data: bytes, encoding: str, time_base: int = 0, hw=(H, W)):
    return SimpleNamespace(encoding=encoding, width=hw[1], height=hw[0], time_base=time_base,
                           is_bigendian=False, events=np.frombuffer(data, np.uint8), seq=0)


def workload(n: int, parts: int):
    rng = np.random.default_rng(0)
    t_us = np.sort(rng.integers(1_000_000, 1_100_000, n))
    x, y, p = rng.integers(0, W, n), rng.integers(0, H, n), rng.integers(0, 2, n)
    out = {"evt3": [], "libcaer": [], "mono": []}
    for part in np.array_split(np.arange(n), parts):
        data = encode_evt3(t_us[part], x[part], y[part], p[part])
        out["evt3"].append(packet(data, "evt3"))
        rel = t_us[part] - t_us[part][0]
        caer = np.stack([((x[part] << 17) | (y[part] << 2) | (p[part] << 1)).astype("<u4"),
                         rel.astype("<u4")], axis=1)
        out["libcaer"].append(packet(caer.astype("<u4").tobytes(), "libcaer", 10**18))
        mono = ((rel * 1000).astype(np.uint64) | (x[part].astype(np.uint64) << 32)
                | (y[part].astype(np.uint64) << 48) | (p[part].astype(np.uint64) << 63))
        out["mono"].append(packet(mono.astype("<u8").tobytes(), "mono", 10**18))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--packets", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    packets = workload(args.events, args.packets)
    runs = [("evt3", "numpy", packets["evt3"], args.events)]
    try:
        EventDecoder(backend="evt3")
        runs.insert(0, ("evt3", "evt3 package", packets["evt3"], args.events))
    except ImportError:
        pass
    runs += [("libcaer", "numpy", packets["libcaer"], args.events),
             ("mono", "numpy", packets["mono"], args.events)]
    if CMP_BAG.is_dir():
        from anyseg_ros.tools import bag as bags

        real = [m.decode() for m in bags.read_bag(CMP_BAG)]
        runs.append(("libcaer_cmp (DAVIS346 recording)", "numpy", real,
                     sum(EventDecoder().decode(p).count for p in real)))

    def decoder_run(backend, pkts):
        def run():
            decoder = EventDecoder(backend="evt3" if backend == "evt3 package" else "numpy")
            return [decoder.decode(p) for p in pkts]
        return run

    fastest = runs[0][1]

    def decode_and_render():
        events = decoder_run(fastest, packets["evt3"])()
        t = np.concatenate([e.t for e in events]) * 1e-9
        x = np.concatenate([e.x for e in events])
        y = np.concatenate([e.y for e in events])
        p = np.concatenate([e.p for e in events])
        return render_events(x, y, t, p, (H, W), t_end=float(t.max()), window=0.1)

    fns = [decoder_run(backend, pkts) for _, backend, pkts, _ in runs] + [decode_and_render]
    times = [ms for ms, _ in measure(fns, args.repeats, lambda: None, block=2)]
    base = times[0]
    load = os.getloadavg()
    print(f"{args.events} events in {args.packets} packets, {W}x{H}; {args.repeats} repeats; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs\n")
    print("| encoding | decoder | median ms | M events/s | time / first row |")
    print("|---|---|---:|---:|---:|")
    for (encoding, backend, _, n), ms in zip(runs, times):
        print(f"| {encoding} | {backend} | {ms:.1f} | {n / ms / 1e3:.1f} | {ms / base:.2f} |")
    ms = times[-1]
    print(f"| evt3, decode + render into {W}x{H} | {fastest} | {ms:.1f} | "
          f"{args.events / ms / 1e3:.1f} | {ms / base:.2f} |")


if __name__ == "__main__":
    main()
