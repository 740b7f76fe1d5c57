"""Column names of the episode store: the only place they are spelled out.

Steps table (one row per observation): EPISODE_ID, STEP, PIXELS, ACTION, STATE,
REWARD, TERMINATED, TRUNCATED. Episodes table (one row per committed episode):
EPISODE_ID, ENV_ID, SEED, FACTORS, POLICY, LENGTH, SPLIT.
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

# files inside a dataset directory
STEPS_TABLE = "steps.lance"
EPISODES_TABLE = "episodes.lance"
META_FILE = "meta.json"
LOCK_FILE = "writer.lock"
