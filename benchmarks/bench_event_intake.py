"""Benchmark the node's event intake at a busy Prophesee's rate while it segments.

    python benchmarks/bench_event_intake.py [--rate 10e6] [--seconds 5] [--packet-ms 1]
        [--checkpoint PATH] [--decoder auto|evt3|numpy]

The node's own work, without DDS (the transport of ~20 MB/s of packets is the middleware's
and not measured here): one :class:`~anyseg_ros.session.Session` with ``events.type:
packet`` (camera and events) takes, on one thread as the node's executor does, an EventPacket
(evt3, this project's encoder) every ``--packet-ms`` of wall time holding ``--rate`` events
per second (uniform over a 1280x720 sensor), and a 1280x720 camera image at 10 Hz; a second
thread, as the node's worker, polls and segments frames as fast as the network allows (the
demo checkpoint at its own size unless ``--checkpoint``). Packets are stamped with the wall
clock as a driver stamps them, so the event camera clock is mapped as on a robot.

Reported: packets offered and accepted (none may be rejected or lost: the intake must keep
up), how far the intake fell behind its schedule (p50 / max ms of the send time past the
packet's due time), decode per packet (p50 ms, its share of the intake thread's time), the
frames segmented per second, and the event part of a frame's time: rendering the frame's
30 ms of events (``Runtime.prepare`` of the events alone) against the frame's whole
``pipeline.run``. Prints a markdown table and the machine's load.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from anyseg_ros import conversions as conv  # noqa: E402
from anyseg_ros.events import encode_evt3  # noqa: E402
from anyseg_ros.session import Session  # noqa: E402

H, W = 720, 1280
K = [900.0, 0.0, 639.5, 0.0, 900.0, 359.5, 0.0, 0.0, 1.0]


def packets(rate: float, packet_s: float, count: int, seed: int = 0):
    """Encoded evt3 payloads of ``rate * packet_s`` events each, on a camera clock."""
    rng = np.random.default_rng(seed)
    n = int(rate * packet_s)
    out = []
    for k in range(count):
        t0 = 1_000_000 + int(k * packet_s * 1e6)
        t_us = np.sort(rng.integers(t0, t0 + int(packet_s * 1e6), n))
        out.append((t0, encode_evt3(t_us, rng.integers(0, W, n), rng.integers(0, H, n),
                                    rng.integers(0, 2, n))))
    return out


def message(data: bytes, seq: int, stamp_ns: int):
    return SimpleNamespace(
        header=SimpleNamespace(stamp=SimpleNamespace(sec=stamp_ns // 10**9,
                                                     nanosec=stamp_ns % 10**9), frame_id="cam"),
        height=H, width=W, seq=seq, time_base=0, encoding="evt3", is_bigendian=False,
        events=np.frombuffer(data, np.uint8))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=10e6, help="events per second")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--packet-ms", type=float, default=1.0)
    ap.add_argument("--checkpoint", default="")
    ap.add_argument("--decoder", default="auto", choices=("auto", "evt3", "numpy"))
    args = ap.parse_args()
    packet_s = args.packet_ms * 1e-3
    count = int(args.seconds / packet_s)
    print(f"encoding {count} packets of {int(args.rate * packet_s)} events ...", flush=True)
    payloads = packets(args.rate, packet_s, count)
    session = Session({"checkpoint": args.checkpoint, "device": "cpu",
                       "modalities": ["camera", "events"], "events.type": "packet",
                       "events.decoder": args.decoder, "camera.K": K,
                       "sync.stale_after": 5.0}, warmup=True)
    image = np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)
    stop = threading.Event()
    frames, frame_ms, event_ms = [], [], []

    def worker():
        while not stop.is_set():
            frame, _ = session.poll(time.monotonic())
            if frame is None:
                time.sleep(0.002)
                continue
            started = time.perf_counter()
            result = session.segment(frame)
            if result is None:
                continue
            frame_ms.append((time.perf_counter() - started) * 1e3)
            frames.append(result)
            raw, _ = session.pipeline.raw_frame(frame, session.geometry)
            if raw.events is not None:  # the event part alone, on the same frame
                events_only = type(raw)(image_hw=raw.image_hw, K=raw.K, t_cam=raw.t_cam,
                                        events=raw.events, events_K=raw.events_K,
                                        events_hw=raw.events_hw,
                                        T_cam_events=raw.T_cam_events)
                t = time.perf_counter()
                session.runtime.prepare(events_only)
                event_ms.append((time.perf_counter() - t) * 1e3)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    lag_ms, decode_ms = [], []
    start_wall = time.time_ns()
    start = time.perf_counter()
    next_camera = 0.0
    busy = 0.0
    for seq, (_, data) in enumerate(payloads):
        due = seq * packet_s
        while time.perf_counter() - start < due:
            time.sleep(min(0.0005, max(0.0, due - (time.perf_counter() - start))))
        now_s = time.perf_counter() - start
        lag_ms.append((now_s - due) * 1e3)
        stamp_ns = start_wall + int(due * 1e9)
        t = time.perf_counter()
        ok = session.receive("events", message(data, seq, stamp_ns), now=time.monotonic())
        decode_ms.append((time.perf_counter() - t) * 1e3)
        busy += time.perf_counter() - t
        assert ok, session.counts()["inputs"]["events"]
        if due >= next_camera:
            cam_ns = start_wall + int(due * 1e9)
            t = time.perf_counter()
            session.receive("camera", conv.array_to_image(image, "rgb8", divmod(cam_ns, 10**9),
                                                           "cam", cls=SimpleNamespace),
                            now=time.monotonic())
            busy += time.perf_counter() - t
            next_camera += 0.1
    elapsed = time.perf_counter() - start
    time.sleep(0.5)
    stop.set()
    thread.join(5)
    counts = session.counts()["inputs"]["events"]
    load = os.getloadavg()
    print(f"\n{args.rate / 1e6:g} M events/s in {args.packet_ms:g} ms packets for "
          f"{args.seconds:g} s; decoder {session.payloads['events'].stream.decoder.backend}; "
          f"network {session.runtime.input_size[0]}x{session.runtime.input_size[1]}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs\n")
    print("| measure | value |")
    print("|---|---:|")
    print(f"| packets offered / accepted / rejected / lost | {count} / {counts['accepted']} / "
          f"{sum(counts['rejected'].values())} / {counts['notes'].get('lost_packets', 0)} |")
    print(f"| intake behind schedule, p50 / max ms | {np.percentile(lag_ms, 50):.2f} / "
          f"{max(lag_ms):.1f} |")
    print(f"| receive (decode, map, hand over) per packet, p50 / p95 ms | "
          f"{np.percentile(decode_ms, 50):.2f} / {np.percentile(decode_ms, 95):.2f} |")
    print(f"| intake thread busy | {100 * busy / elapsed:.0f} % |")
    print(f"| frames segmented per s | {len(frames) / elapsed:.1f} |")
    if frame_ms and event_ms:
        share = np.percentile(event_ms, 50) / np.percentile(frame_ms, 50)
        print(f"| frame (pipeline.run) p50 ms | {np.percentile(frame_ms, 50):.1f} |")
        print(f"| its events (render of the frame's window) p50 ms | "
              f"{np.percentile(event_ms, 50):.1f} ({100 * share:.0f} % of the frame) |")


if __name__ == "__main__":
    main()
