"""Datasets that yield raw sensor data (:class:`anyseg_core.sensors.RawFrame`) and labels."""
