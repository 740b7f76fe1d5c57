"""The names datasets give each per-step field, shared by the readers of foreign layouts.

Readers look a field up under these names in this order (first match wins): HDF5 groups
and DINO-WM arrays (`hdf5.py`), stable-worldmodel flat tables in Lance or HDF5 (`swm.py`).
"""

from __future__ import annotations

PIXEL_KEYS = ("pixels", "obses", "observations", "obs", "images", "image")
ACTION_KEYS = ("action", "actions")
STATE_KEYS = ("state", "states", "proprio", "proprios")
REWARD_KEYS = ("reward", "rewards")
TERMINATED_KEYS = ("terminated", "terminals")
TRUNCATED_KEYS = ("truncated", "timeouts")

