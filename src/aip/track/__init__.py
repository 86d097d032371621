"""Tracks, zones and lines, and the events they give: per stream, after the reorder (frames in order).

May import aip.results, aip.errors and numpy; ultralytics only inside tracker.py, lazily.
"""
from __future__ import annotations

from aip.track.tracker import StreamTracker, TrackerConfig, load_tracker_config
from aip.track.zones import ANCHORS, Line, RegionCounter, Zone

__all__ = ["ANCHORS", "Line", "RegionCounter", "StreamTracker", "TrackerConfig", "Zone", "load_tracker_config"]
