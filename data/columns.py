"""Column names of the episode store: the only place they are spelled out.

Steps table (one row per observation): EPISODE_ID, STEP, PIXELS, ACTION, STATE,
REWARD, TERMINATED, TRUNCATED. Episodes table (one row per committed episode):
EPISODE_ID, ENV_ID, SEED, FACTORS, POLICY, LENGTH, SPLIT, and in datasets written
since it was added the optional SUCCESS_STEP.
"""

# steps table
EPISODE_ID = "episode_id"
STEP = "step"
PIXELS = "pixels"
ACTION = "action"
STATE = "state"
REWARD = "reward"
TERMINATED = "terminated"
TRUNCATED = "truncated"

STEP_COLUMNS = (EPISODE_ID, STEP, PIXELS, ACTION, STATE, REWARD, TERMINATED, TRUNCATED)

# episodes table
ENV_ID = "env_id"
SEED = "seed"
FACTORS = "factors"
POLICY = "policy"
LENGTH = "length"
SPLIT = "split"

EPISODE_COLUMNS = (EPISODE_ID, ENV_ID, SEED, FACTORS, POLICY, LENGTH, SPLIT)
SUCCESS_STEP = "success_step"
"""Optional episodes column (int32, nullable): the first row at which the env reported
success, -1 if it never did, null if not recorded. Older datasets lack the column."""

# files inside a dataset directory
STEPS_TABLE = "steps.lance"
EPISODES_TABLE = "episodes.lance"
META_FILE = "meta.json"
LOCK_FILE = "writer.lock"
