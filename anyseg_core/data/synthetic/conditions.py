"""Weather, time of day and exposure, as in MUSES (plus DELIVER's exposure corner cases).

A :class:`Condition` only says *what* the conditions are; how each sensor reacts is in
:mod:`.rig` (camera, LiDAR, events) so that the physics of one sensor reads in one place.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEATHERS = ("clear", "rain", "snow", "fog")
TIMES = ("day", "night")
EXPOSURES = ("normal", "over", "under")


@dataclass(frozen=True)
class Condition:
    weather: str = "clear"
    time: str = "day"
    exposure: str = "normal"

    def __post_init__(self) -> None:
        for value, allowed, what in ((self.weather, WEATHERS, "weather"),
                                     (self.time, TIMES, "time of day"),
                                     (self.exposure, EXPOSURES, "exposure")):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}; expected one of {list(allowed)}")

    @property
    def name(self) -> str:
        """``weather-time`` with ``-overexposed``/``-underexposed`` when not normal."""
        base = f"{self.weather}-{self.time}"
        return base if self.exposure == "normal" else f"{base}-{self.exposure}exposed"

    @classmethod
    def parse(cls, text: str) -> "Condition":
        """Parse ``fog-night``, ``clear-day-overexposed``, ``rain`` (day), ``night`` (clear)."""
        weather, time, exposure = "clear", "day", "normal"
        for part in text.strip().lower().split("-"):
            if part in WEATHERS:
                weather = part
            elif part in TIMES:
                time = part
            elif part in ("overexposed", "over", "underexposed", "under"):
                exposure = part[:-7] if part.endswith("exposed") else part
            elif part:
                raise ValueError(
                    f"cannot parse condition {text!r}: {part!r} is not a weather "
                    f"{list(WEATHERS)}, a time of day {list(TIMES)} or over/underexposed")
        return cls(weather, time, exposure)


def all_conditions(with_exposure: bool = False) -> list[Condition]:
    out = [Condition(w, t) for w in WEATHERS for t in TIMES]
    if with_exposure:
        out += [Condition("clear", "day", e) for e in ("over", "under")]
    return out


def sample_condition(rng: np.random.Generator) -> Condition:
    """Roughly MUSES' mix: 40% clear, 20% each of rain, snow and fog; 40% at night; and a
    quarter of clear days badly exposed (half of them over-, half under-exposed)."""
    weather = rng.choice(WEATHERS, p=[0.4, 0.2, 0.2, 0.2])
    time = "night" if rng.random() < 0.4 else "day"
    exposure = "normal"
    if weather == "clear" and time == "day" and rng.random() < 0.25:
        exposure = "over" if rng.random() < 0.5 else "under"
    return Condition(str(weather), time, exposure)
