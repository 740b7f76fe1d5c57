"""The ``wm`` command line. It parses arguments and dispatches; the work lives in the packages.

Run ``wm --help`` or ``wm COMMAND --help`` for examples.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Callable, Sequence

from worldmodel.configargs import add_dataclass_arguments, dataclass_from_args

EPILOGS = {
    "envs": "example:\n  wm envs --json",
    "factors": "examples:\n  wm factors wm/TwoRoom-v0\n  wm factors wm/TwoRoom-v0 --json",
    "collect": (
        "examples:\n"
        "  wm collect --env wm/TwoRoom-v0 --episodes 200 --out runs/tworoom.lance\n"
        "  wm collect --env wm/TwoRoom-v0 --episodes 50 --out runs/ood.lance --split ood --severity 2 --policy random\n"
        "  wm collect --env wm/TwoRoom-v0 --episodes 1000 --out runs/big.lance --resolution 224 --workers 2\n"
        "  wm collect --env wm/PushT-v0 --episodes 1000 --out runs/pusht.lance --resolution 224 --codec h264 --gop 16"
    ),
    "data": (
        "examples:\n  wm data info runs/tworoom.lance --json\n  wm data validate runs/tworoom.lance\n"
        "  wm data compact runs/tworoom.lance\n  wm data repair runs/tworoom.lance\n  wm data preview runs/tworoom.lance --out runs/preview.gif --count 8\n"
        "  wm data convert runs/tworoom.lance runs/tworoom.h5 --to hdf5\n"
        "  wm data convert runs/tworoom.lance runs/tworoom_lerobot --to lerobot --codec png --episodes 0-9\n"
        "  wm data convert runs/tworoom_lerobot runs/back.lance --to lance\n"
        "  wm data convert runs/pusht.lance runs/pusht_h264.lance --to lance --codec h264 --crf 23"
    ),
    "train": (
        "examples:\n"
        "  wm train --data runs/tworoom.lance --out runs/ckpt\n"
        "  wm train --data runs/tworoom.lance --out runs/ckpt --steps 200 --device cpu\n"
        "  wm train --model pldm --data runs/tworoom.lance --out runs/pldm\n"
        "  wm train --preset pixel-tiny --data runs/tworoom28.lance --out runs/pixel\n"
        "  wm train --config runs/ckpt/config.json --data runs/tworoom.lance --out runs/again\n"
        "  wm train --model pldm --help      # the options of that family"
    ),
    "eval": (
        "examples:\n"
        "  wm eval --ckpt runs/ckpt --data runs/heldout.lance --out runs/eval\n"
        "  wm eval --ckpt runs/ckpt --data runs/heldout.lance --out runs/eval --episodes 10 --iterations 10\n"
        "  wm eval --ckpt runs/ckpt --data runs/heldout.lance --out runs/eval --oracle   # + the oracle, same pairs\n"
        "  wm eval --oracle-only --data runs/heldout.lance --out runs/oracle --num-samples 100 --iterations 10\n"
        "  wm eval --ckpt runs/ckpt --data runs/heldout.lance --out runs/eval --objective terminal_l2=1,effort=0.01\n"
        "  wm eval --ckpt runs/ckpt --data runs/heldout.lance --out runs/eval --planner icem --planner-opt beta=2.5\n"
        "  wm eval --ckpt runs/ckpt --data runs/heldout.lance --out runs/eval --planner mppi --planner-opt temperature=0.1\n"
        "  wm eval --ckpt runs/ckpt --data runs/heldout.lance --out runs/eval --episodes 500 --batch-envs 50"
    ),
    "demo": "examples:\n  wm demo --out runs/demo\n  wm demo --out runs/demo --quick   # a one-minute smoke run",
    "bench": (
        "examples:\n"
        "  wm bench envs --resolution 224 --json\n"
        "  wm bench envs --env wm/TwoRoom-v0 --resolution 64\n"
        "  wm bench data --resolution 224 --json\n"
        "  wm bench data --resolution 64 --quick\n"
        "  wm bench data --resolution 224 --codecs-only --json\n"
        "  wm bench solvers --json\n"
        "  wm bench solvers --solver cem --dtype bfloat16 --json\n"
        "  wm bench train --preset lewm-tiny --threads 1 --amp --json\n"
        "  wm bench noisy --env wm/TwoRoom-v0 --out runs/noisy --models lewm pixel"
    ),
    "diagnose": (
        "examples:\n"
        "  wm diagnose runs/ckpt --data runs/heldout.lance --out runs/diagnose\n"
        "  wm diagnose runs/ckpt --data runs/heldout.lance --out runs/diagnose --episodes 40 --steps 4 --seed 1 --json"
    ),
    "gallery": "example:\n  wm gallery --out docs/gallery --resolution 128",
    "report": (
        "examples:\n"
        "  wm report runs/eval --out runs/report.md                  # images in runs/report_files/\n"
        "  wm report runs/eval runs/oracle runs/ood runs/bench --out docs/results.md"
    ),
}


def _add_planning_args(p: argparse.ArgumentParser, protocol_exclude: tuple[str, ...] = ()) -> None:
    """The ``protocol`` (`PlanningProtocol` less ``protocol_exclude``) and ``planner`` (`PlannerConfig`,
    its seed being the protocol's, and ``--planner-opt``) argument groups of wm eval, ood and model-or-solver."""
    from benchmarks.planning import PlannerConfig
    from benchmarks.protocol import PlanningProtocol

    add_dataclass_arguments(p.add_argument_group("protocol"), PlanningProtocol, exclude=protocol_exclude)
    g = p.add_argument_group("planner")
    add_dataclass_arguments(g, PlannerConfig, exclude=("seed",))
    g.add_argument("--planner-opt", dest="planner_opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a solver option (repeatable), e.g. --planner icem --planner-opt beta=2.5; "
                        "each solver's options and defaults are in its docstring (planners/NAME.py)")


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="wm",
        description="worldmodel: collect rollouts, train JEPA world models, plan with them, measure.",
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOGS.get(name), formatter_class=fmt)

    p = add("envs", "list the registered environments")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("factors", "list an environment's factors of variation")
    p.add_argument("env", help="environment id, e.g. wm/TwoRoom-v0")
    p.add_argument("--json", action="store_true", help="print JSON (a list of factor objects)")

    p = add("collect", "collect episodes from an environment into a Lance dataset")
    p.add_argument("--env", required=True, help="environment id, e.g. wm/TwoRoom-v0")
    p.add_argument("--episodes", type=int, required=True, help="number of episodes to collect")
    p.add_argument("--out", required=True, help="dataset directory to write")
    p.add_argument("--policy", default="expert",
                   help="collection policy: expert (noisy) | expert-tour (target after target, ignoring the episode's "
                        "goal: long-horizon pair episodes, with --max-steps) | random")
    p.add_argument("--max-steps", type=int, default=None,
                   help="actions per episode at most (default: the env's time limit; more lifts the limit)")
    p.add_argument("--split", default=None, help="factor split sampled per episode (train, ood, ...); default: default factors")
    p.add_argument("--codec", default=None, choices=["raw", "jpeg", "png", "h264"],
                   help="frame codec (default: raw up to 64x64, jpeg above; h264: video in groups of --gop frames)")
    _add_video_arguments(p)
    p.add_argument("--resolution", type=int, default=64, help="rendered frame size in pixels")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the first episode (episode i uses seed+i; default 0, or after the highest seed when appending)")
    p.add_argument("--mode", default="append", choices=["append", "overwrite", "error"], help="what to do if --out exists")
    p.add_argument("--workers", type=int, default=1, help="env worker processes (episodes are written in seed order either way)")
    p.add_argument("--severity", type=int, default=None, help="OOD severity 1..3 for an OOD --split")
    p.add_argument("--factor", action="append", default=None, metavar="NAME=VALUE",
                   help="fix a factor in every episode (repeatable; vectors as 0.9,0.1,0.1); the others follow --split")
    p.add_argument("--ood-factor", action="append", default=None, metavar="NAME",
                   help="draw this factor from its OOD ranges (at --severity) in every episode (repeatable)")
    p.add_argument("--noise", type=float, default=None, help="expert action-noise std (default: the policy's)")
    p.add_argument("--commit-every", type=int, default=1,
                   help="whole episodes per Lance commit (default 1; larger is faster, a crash loses the uncommitted ones)")
    p.add_argument("--stop-on-success", action="store_true",
                   help="end each episode at its first success (default: run on to the env's time limit, a fixed "
                        "length; the first success step is recorded either way)")

    p = add("data", "inspect Lance datasets")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    q = dsub.add_parser("info", help="schema, counts and factor summary of a dataset")
    q.add_argument("path")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = dsub.add_parser("validate", help="check a dataset; exit 0 only if it is sound")
    q.add_argument("path")
    q = dsub.add_parser("compact", help="merge fragments and drop old versions (crash-safe)")
    q.add_argument("path")
    q = dsub.add_parser("repair", help="drop duplicated or partial step rows, keep every whole episode (crash-safe)",
                        description="Mend a dataset whose rows were committed twice or in part (validate: 'N step rows, "
                                    "its length says M'): keeps every whole episode, drops the extra rows and episodes "
                                    "that are not whole (listed). Exit 0 when the dataset is sound afterwards.")
    q.add_argument("path")
    q = dsub.add_parser("preview", help="write a video grid of episodes (.mp4 or .gif)")
    q.add_argument("path")
    q.add_argument("--out", default=None, help="output file (default: PATH/../<name>_preview.mp4)")
    q.add_argument("--episodes", type=int, nargs="*", default=None, help="episode ids (default: the first --count)")
    q.add_argument("--count", type=int, default=8, help="episodes when --episodes is not given")
    q.add_argument("--cols", type=int, default=4, help="grid columns")
    q.add_argument("--scale", type=int, default=2, help="upscaling factor of each tile")
    q = dsub.add_parser(
        "convert",
        help="convert between this store (Lance) and HDF5, MP4 folders, LeRobot v3, stable-worldmodel",
        description="Convert SRC (format detected: worldmodel Lance dataset, .h5/.hdf5 file, MP4 folder with "
        "episodes.jsonl, LeRobot v3 folder, stable-worldmodel Lance table) into DST. Lossy steps are listed on stderr.",
    )
    q.add_argument("src", help="source dataset (file or folder)")
    q.add_argument("dst", help="destination path")
    q.add_argument("--to", required=True, choices=["lance", "hdf5", "mp4", "lerobot"], help="destination format")
    q.add_argument("--codec", default=None, choices=["raw", "jpeg", "png", "h264"],
                   help="frames: Lance codec (default: the source's); LeRobot png|jpeg images in parquet (default: MP4 video)")
    _add_video_arguments(q, convert=True)
    q.add_argument("--episodes", default=None, help="source episode ids, e.g. 0,2,5-9 (default: all)")
    q.add_argument("--mode", default="error", choices=["append", "overwrite", "error"],
                   help="if DST exists: refuse (default), replace it, or add to it (Lance only)")
    q.add_argument("--from", dest="src_format", default=None, choices=["lance", "hdf5", "mp4", "lerobot", "swm-lance"],
                   help="source format (default: detected)")

    # The training and model options are parsed by tyro from the config dataclasses (worldmodel/trainargs.py):
    # argparse reads only what decides their defaults and passes the rest on (main: parse_known_args).
    p = sub.add_parser("train", help="train a world model (any registered family) on a dataset", add_help=False,
                       allow_abbrev=False, epilog=EPILOGS.get("train"), formatter_class=fmt)
    p.add_argument("--model", default=None, metavar="FAMILY", help="world-model family (default: lewm)")
    p.add_argument("--preset", default=None, metavar="NAME", help="a named configuration (implies its family)")
    p.add_argument("--config", default=None, metavar="FILE", help="JSON file of 'model' and 'train' defaults")
    # The training window's old name, now the planning horizon's (`wm eval --horizon`): refused by _cmd_train.
    p.add_argument("--horizon", dest="old_horizon", default=None, help=argparse.SUPPRESS)

    p = add("eval", "measure planning success of a checkpoint against a random baseline")
    p.add_argument("--ckpt", default=None, help="checkpoint folder (config.json + model.safetensors); not with --oracle-only")
    p.add_argument("--data", default=None, help="dataset whose (held-out) episodes give start/goal pairs; or --env")
    p.add_argument("--out", required=True, help="folder for episodes.jsonl and summary.json")
    g = p.add_argument_group(
        "condition (instead of --data: start/goal episodes collected for the condition, benchmarks/conditions.py)")
    g.add_argument("--env", default=None, help="environment id: collect the pairs' episodes into OUT/pairs.lance")
    g.add_argument("--split", default=None, help="factor split of those episodes (train, ood_visual, ...; default: "
                                                  "default factors)")
    g.add_argument("--severity", type=int, default=None, help="OOD severity 1..3 for an OOD --split")
    g.add_argument("--factor", action="append", default=None, metavar="NAME=VALUE",
                   help="fix a factor in every episode (repeatable; vectors as 0.9,0.1,0.1)")
    g.add_argument("--ood-factor", action="append", default=None, metavar="NAME",
                   help="draw this factor from its OOD ranges (at --severity) in every episode, the others following "
                        "--split (repeatable; a one-factor-at-a-time shift)")
    g.add_argument("--goal-source", default="expert", choices=["expert", "random"],
                   help="policy whose episodes give the start/goal pairs (default: expert)")
    g.add_argument("--resolution", type=int, default=None,
                   help="frame size of the collected episodes (default: the checkpoint's image size, else 64)")
    g.add_argument("--pair-seed", type=int, default=None, metavar="S",
                   help="first seed of those episodes (default 2,000,000, as wm ood; another range keeps the pairs "
                        "apart from ones a recipe was chosen on)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--no-video", dest="video", action="store_false", help="skip the MP4 of a planned episode")
    _add_planning_args(p)
    p.add_argument("--batch-envs", type=int, default=None, metavar="N",
                   help="environments run at once; more pairs run in chunks of N in the same N environments "
                        "(default 50; every pair plans from its own random stream, so N does not change the draws)")
    p.add_argument("--allow-train-episodes", action="store_true",
                   help="evaluate on pairs from episodes the checkpoint trained or validated on (refused by default; "
                        "the summary then records allow_train_episodes and train_overlap_pairs)")
    g = p.add_argument_group("oracle (the same solver planning through the true simulator, planners/oracle.py)")
    g.add_argument("--oracle", action="store_true", help="also run the oracle on the same pairs (oracle_* keys)")
    g.add_argument("--oracle-only", action="store_true", help="run the oracle and the random baseline only, no --ckpt")
    g.add_argument("--oracle-frameskip", type=int, default=None, metavar="INT",
                   help="raw actions per oracle action block (default: the checkpoint's frameskip, else 5)")
    g.add_argument("--oracle-reduce", default="final", choices=["final", "min"],
                   help="oracle cost: goal distance at the end of a candidate (default) or its minimum along it")

    from benchmarks.ood import OOD_SPLITS, SEVERITIES, OODConfig

    p = add("ood", "planning success of a checkpoint in and out of distribution, condition by condition, with a report")
    p.add_argument("--ckpt", required=True, help="checkpoint folder")
    p.add_argument("--env", required=True, help="environment id the checkpoint was trained on")
    p.add_argument("--out", required=True, help="folder for conditions/, results.jsonl, report.md, heatmap.png")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    g = p.add_argument_group("suite (benchmarks/ood.py)")
    add_dataclass_arguments(g, OODConfig)
    g.add_argument("--severities", type=int, nargs="+", default=list(SEVERITIES), help="OOD severities (default: 1 2 3)")
    g.add_argument("--splits", nargs="*", default=list(OOD_SPLITS),
                   help=f"OOD splits (default: {' '.join(OOD_SPLITS)}; none given: no split conditions)")
    g.add_argument("--sweep-factors", dest="sweep_factors", nargs="+", default=[], metavar="NAME",
                   help="factors the one-factor-at-a-time sweep covers, by name or kind (visual, geometric, physical; "
                        "default: every factor)")
    _add_planning_args(p, protocol_exclude=("episodes",))  # --episodes is the suite's (per condition)

    p = add("ood-pool", "pool wm ood runs of one recipe trained with several seeds into one suite, with a report")
    p.description = ("Sums each condition's successes, episodes and random-baseline successes over the runs (one env, "
                     "training label and pair seed; each checkpoint once) and writes OUT/results.jsonl (wm ood's keys, "
                     "plus pooled_from, runs, run_successes), OUT/report.md and OUT/heatmap.png; retained = pooled "
                     "success / pooled id success, with its 95% interval. Conditions missing from a run are left out "
                     "and named.")
    p.add_argument("runs", nargs="+", metavar="DIR", help="wm ood --out folders (two or more)")
    p.add_argument("--out", required=True, help="folder for results.jsonl, report.md, heatmap.png")

    p = add("bench", "measure the platform's speed")
    bsub = p.add_subparsers(dest="bench_command", required=True, metavar="SUBCOMMAND")
    q = bsub.add_parser("envs", help="single-process steps/s of every env, a frame rendered every step")
    q.add_argument("--resolution", type=int, default=224, help="rendered frame size in pixels")
    q.add_argument("--env", action="append", default=None, help="env id to measure (repeatable; default: all)")
    q.add_argument("--seconds", type=float, default=2.0, help="minimum timed seconds per env")
    q.add_argument("--json", action="store_true", help="print JSON {env_id: steps_per_s}")
    q.add_argument("--factor", action="append", default=None, metavar="NAME=VALUE",
                   help="set a factor at every reset of every measured env (repeatable), e.g. distractor=4")

    q = bsub.add_parser(
        "data", help="window throughput per codec and loader, JPEG decode bound, write and collect speed, codec comparison",
        description="Generates its own data in a temporary folder. windows_per_s is the best of three DataLoader "
                    "configurations (main, threads, workers) reading 4-frame windows (frameskip 5, batch 64) of JPEG "
                    "frames at --resolution; 'codecs' compares jpeg and h264 on PushT expert frames (bytes per frame, "
                    "PSNR, windows/s, write frames/s). The protocol is in benchmarks/data.py.",
    )
    q.add_argument("--resolution", type=int, default=224, help="frame size in pixels")
    q.add_argument("--seconds", type=float, default=None, help="timed seconds per loader configuration (default 3)")
    q.add_argument("--quick", action="store_true", help="tiny data and timings: a smoke run, numbers meaningless")
    q.add_argument("--codecs-only", action="store_true",
                   help="only the codec comparison on PushT expert frames (jpeg vs h264: bytes/frame, PSNR, windows/s, write frames/s)")
    q.add_argument("--json", action="store_true", help="print the full result as JSON (windows_per_s, decode_bound_windows_per_s, codecs, ...)")

    q = bsub.add_parser("experts", help="success rate of every env's scripted expert (clean and noisy) on its train split")
    q.add_argument("--env", action="append", default=None, help="env id (repeatable; default: all)")
    q.add_argument("--episodes", type=int, default=50, help="seeded episodes per env and noise level")
    q.add_argument("--json", action="store_true", help="print JSON {env_id: {clean: {...}, noisy: {...}}}")

    q = bsub.add_parser(
        "solvers", help="seconds and FLOPs per plan of every solver on a random LeWorldModel-scale model",
        description="Plans with each solver for 1 and for 8 environments batched on a randomly initialised "
                    "LeWorldModel-scale model (ModelConfig.preset('lewm')), counting FLOPs with "
                    "torch.utils.flop_counter and measuring this machine's GEMM rate per precision in the same "
                    "run; the protocol is in benchmarks/solvers.py.",
    )
    q.add_argument("--solver", action="append", default=None, help="solver name (repeatable; default: all)")
    q.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="planning precision")
    q.add_argument("--envs", type=int, default=8, help="environments planned in one batched call (also 1)")
    q.add_argument("--repeats", type=int, default=1, help="timed plans per solver and env count (the best counts)")
    q.add_argument("--quick", action="store_true", help="tiny model and budgets: a smoke run, numbers meaningless")
    q.add_argument("--compile", action="store_true",
                   help="roll out through torch.compile (compiled in a warm-up, reported as compile_seconds)")
    q.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for the GEMM rate and the plans alike (default: torch's setting)")
    q.add_argument("--json", action="store_true",
                   help='print JSON {"gemm_gflops": {...}, "solvers": {NAME: {"seconds_per_env_plan", ...}}}')

    q = bsub.add_parser(
        "train", help="training samples/s of a model preset and its fraction of this machine's GEMM rate",
        description="Times training steps (forward, backward, clipping, AdamW) of a randomly initialised model on "
                    "synthetic uint8 windows of the preset's shape, counts a step's FLOPs with "
                    "torch.utils.flop_counter and measures this machine's GEMM rate per precision in the same run, "
                    "at the same thread count; the protocol and the JSON keys are in benchmarks/train_speed.py.",
    )
    q.add_argument("--preset", default="lewm-tiny", help="model preset of any family (default: lewm-tiny)")
    q.add_argument("--config", default=None,
                   help="a JSON file with a 'model' section (a checkpoint's config.json works) instead of --preset: "
                        "e.g. the model of a benchmark recipe's checkpoint")
    q.add_argument("--batch-size", type=int, default=32, help="windows per training step")
    q.add_argument("--steps", type=int, default=10, help="timed steps per precision (the median counts)")
    q.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed ones")
    q.add_argument("--amp", action="store_true", help="also measure bf16 autocast (wm train --amp) beside float32")
    q.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for the GEMM rate and the steps alike (default: torch's setting)")
    q.add_argument("--json", action="store_true",
                   help='print JSON {"gemm_gflops": {...}, "precisions": {"float32": {"samples_per_s", '
                        '"gemm_fraction", ...}}, ...}')

    q = bsub.add_parser(
        "planning", help="collect -> train -> evaluate each env's versioned recipe (benchmarks/recipes.py)",
        description="Runs the recipe of each env (benchmarks/recipes.py): data, training, planning evaluation with "
                    "the random baseline and the oracle on the same held-out pairs; a recipe with a long protocol "
                    "(TwoRoom: goal 100 steps ahead, budget 150, pairs from held-out tour episodes) also gets a "
                    "'long' result line. Finished stages are reused on a re-run; the recipe's hash is in every "
                    "result. Layout and keys: benchmarks/bench_planning.py.",
    )
    q.add_argument("--env", action="append", default=None, help="env id (repeatable), or 'all'")
    q.add_argument("--out", required=True, help="output folder (one folder per env, results.jsonl)")
    q.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (pooled, with mean and spread)")
    q.add_argument("--split", default=None, choices=["train"],
                   help="run each recipe's factor-randomised variant (data over the train ranges; trained with "
                        "benchmarks.recipes.RANDOMISED_TRAIN's changes where it has some, as TwoRoom and PointMaze)")
    q.add_argument("--family", default=None,
                   help="train this model family instead of the recipe's (its default configuration with the "
                        "recipe's model fields; recipe name suffixed -FAMILY): lewm, pldm, pixel")
    q.add_argument("--recipe", default=None, help="a recipe JSON file (as written to OUT/ENV/recipe.json) instead")
    q.add_argument("--validation", action="store_true",
                   help="choose a recipe change here: train, then plan on validation pairs (expert episodes of "
                        "seeds 3,000,000.., disjoint from training, held-out and wm eval --env's) instead of the "
                        "held-out ones; no oracle, no long protocol; result lines with \"protocol\": \"validation\"")
    q.add_argument("--device", default="auto", help="auto | cpu | cuda")
    q.add_argument("--json", action="store_true", help="print the result lines as JSON")

    q = bsub.add_parser(
        "recipe", help="print an env's registered recipe as JSON (edit it, then wm bench planning --recipe FILE)",
        description="Writes the recipe wm bench planning --env ID would run (with --split / --family, the variant), "
                    "with its hash on stderr, to stdout or --out FILE.",
    )
    q.add_argument("--env", required=True, help="env id with a registered recipe")
    q.add_argument("--split", default=None, choices=["train"], help="the factor-randomised variant")
    q.add_argument("--family", default=None, help="the variant training this model family (lewm, pldm, pixel)")
    q.add_argument("--out", default=None, help="write the JSON to this file instead of stdout")

    q = bsub.add_parser(
        "noisy", help="the noisy-feature experiment: model families trained with and without distractors "
                      "(probe R^2 of the true state, planning success)",
        description="For each --models family and for data without and with the distractor factor (moving patches "
                    "of flickering noise, observation only), runs the env's recipe (collect, train, plan on held-out "
                    "pairs vs random) and scores a linear probe of the goal state on held-out episodes. Writes "
                    "OUT/results.jsonl and OUT/report.md; finished stages are reused on a re-run. Layout and keys: "
                    "benchmarks/noisy_features.py.",
    )
    q.add_argument("--env", required=True, help="wm/TwoRoom-v0 or wm/PushT-v0 (envs with the distractor factor)")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--models", nargs="+", default=["lewm", "pixel"], metavar="FAMILY",
                   help="model families to train (default: lewm pixel)")
    q.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    q.add_argument("--episodes", type=int, default=None, help="held-out planning episodes (default: the recipe's)")
    q.add_argument("--distractor", default="4",
                   help="the 'on' condition's distractor factor: a value (patches; train range [0, 4], ood [6, 12]) "
                        "or 'train' to draw it per episode over the train range (default: 4)")
    q.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (pooled)")
    q.add_argument("--conditions", nargs="+", default=["off", "on"], choices=["off", "on"],
                   help="data conditions to run (default: off on); e.g. 'on' in a second process beside one running "
                        "'off' (a later run over both reuses their stages and writes the whole table)")
    q.add_argument("--recipe", default=None, help="a base recipe JSON file instead of the env's registered recipe")
    q.add_argument("--device", default="auto", help="auto | cpu | cuda")
    q.add_argument("--json", action="store_true", help="print the result lines as JSON")

    p = add("diagnose", "RankMe, state-probe R^2, open-loop error, surprise and straightness of a checkpoint "
                        "on held-out episodes (benchmarks/diagnose.py)")
    p.add_argument("ckpt", metavar="CKPT", help="checkpoint folder")
    p.add_argument("--data", required=True, metavar="PATH",
                   help="dataset of held-out episodes of the env the checkpoint trained on (wm collect)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for diagnostics.json, surprise.jsonl and the plots")
    p.add_argument("--episodes", type=int, default=100, metavar="N",
                   help="at most N episodes of --data, drawn with --seed (default 100; at least 2: the probe is "
                        "fitted on 70%% of them and scored on the others)")
    p.add_argument("--steps", type=int, default=5, metavar="K", help="open-loop rollout length in action blocks (default 5)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the episode draw, the probe's episode split and the sampled transitions (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--allow-train-episodes", action="store_true",
                   help="diagnose on episodes the checkpoint trained or validated on (refused by default; the JSON "
                        "then records allow_train_episodes and the overlap)")
    p.add_argument("--json", action="store_true", help="print diagnostics.json (default: a one-line summary per metric)")

    p = add("model-or-solver", "is planning failing because of the model or the solver? the first plan on each "
                               "pair beside the expert's path, under the model and in the simulator "
                               "(benchmarks/model_or_solver.py)")
    p.description = ("On wm eval's start/goal pairs of --data, makes the MPC's first plan and scores it, the expert's "
                     "recorded path to the goal and that path held per action block, under the model's objective and "
                     "in the true simulator. solver_short counts pairs whose plan the model scores worse than the held "
                     "expert path (the solver falls short); model_misranks those whose plan scores at least as well "
                     "but truly does not reach the goal (the model misleads the solver); open_loop_error_ratio is "
                     "the predictor's error on the expert's path over the nothing-moves error. Writes "
                     "OUT/model_or_solver.json and OUT/pairs.jsonl. Needs --offset = --horizon x the model's frameskip.")
    p.add_argument("ckpt", metavar="CKPT", help="checkpoint folder")
    p.add_argument("--data", required=True, metavar="PATH",
                   help="held-out expert episodes of the env the checkpoint trained on (wm collect; as wm eval --data)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for model_or_solver.json and pairs.jsonl")
    _add_planning_args(p)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--allow-train-episodes", action="store_true",
                   help="use pairs from episodes the checkpoint trained or validated on (refused by default)")
    p.add_argument("--json", action="store_true", help="print model_or_solver.json (default: a few summary lines)")

    p = add("gallery", "render every env under train and OOD factors into PNGs")
    p.add_argument("--out", default="docs/gallery", help="output folder (one PNG per env)")
    p.add_argument("--resolution", type=int, default=128, help="tile size in pixels")
    p.add_argument("--env", action="append", default=None, help="env id (repeatable; default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first tile")

    p = add("report", "one Markdown page with plots from result folders (wm eval, wm ood, wm bench planning)")
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="result folders, searched recursively for summary.json (wm eval) and results.jsonl (wm ood, "
                        "wm bench planning)")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="the Markdown page to write (.md); its images go in a folder PATH_STEM_files/ beside it")

    p = add("demo", "collect -> train -> eval on TwoRoom, end to end")
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--quick", action="store_true", help="tiny budgets: checks the pipeline in about a minute")
    p.add_argument("--seed", type=int, default=0, help="seed for collection, training and evaluation")
    return parser


def _add_video_arguments(p: argparse.ArgumentParser, convert: bool = False) -> None:
    """The h264 codec's flags (`data.video.VideoOptions`); unset ones take the dataset's or the defaults."""
    from data.video import DEFAULT_GOP, PIX_FMTS, PRESETS, VideoOptions

    keep = ("the source's when it is h264, else " if convert else "the dataset's when appending, else ")
    g = p.add_argument_group("h264 codec (--codec h264)")
    g.add_argument("--gop", type=int, default=None,
                   help=f"frames per group of pictures (default: {keep}{DEFAULT_GOP} = one window of 4 frames at "
                        f"frameskip 5; for n frames at frameskip f use (n-1)*f+1)")
    d = VideoOptions()
    g.add_argument("--crf", type=int, default=None, help=f"libx264 quality 0-51, lower is better (default: {keep}{d.crf})")
    g.add_argument("--preset", default=None, choices=PRESETS, help=f"libx264 speed preset (default: {keep}{d.preset})")
    g.add_argument("--pix-fmt", default=None, choices=PIX_FMTS, help=f"chroma sampling (default: {keep}{d.pix_fmt})")
    g.add_argument("--lossless", action="store_true", default=None, help="lossless RGB (libx264rgb, qp 0): bit-exact frames")


def _video_options(args: argparse.Namespace) -> dict | None:
    """The h264 settings given on the command line (only those), or None."""
    given = {"gop": args.gop, "crf": args.crf, "preset": args.preset, "pix_fmt": args.pix_fmt, "lossless": args.lossless}
    given = {k: v for k, v in given.items() if v is not None}
    if given and args.codec not in (None, "h264"):
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"{flags} apply to --codec h264, not --codec {args.codec}")
    return given or None


def _cmd_envs(args: argparse.Namespace) -> int:
    import envs

    ids = envs.list_envs()
    if args.json:
        print(json.dumps(ids))
    else:
        print("\n".join(ids))
    return 0


def _cmd_factors(args: argparse.Namespace) -> int:
    import envs

    rows = envs.factor_space(args.env).describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<18} {'kind':<10} {'default':<28} {'train':<40} ood")
    for r in rows:
        print(f"{r['name']:<18} {r['kind']:<10} {_fmt(r['default']):<28} {_fmt(r['train']):<40} {_fmt(r['ood'])}")
    return 0


def _fmt(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in dicts, lists, tuples) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json(value: Any, **kwargs: Any) -> str:
    """Standard JSON text for stdout: non-finite floats become null (never ``NaN``/``Infinity``)."""
    return json.dumps(_finite(value), allow_nan=False, **kwargs)


#: largest --resolution of `wm gallery` and `wm bench envs` (a frame is resolution² × 3 bytes)
MAX_RESOLUTION = 1024


def _log(line: str) -> None:
    """A benchmark's progress line, on stderr (stdout keeps the result alone)."""
    print(line, file=sys.stderr, flush=True)


def _check_resolution(value: int, high: int = MAX_RESOLUTION) -> None:
    """Reject a ``--resolution`` outside ``[8, high]``, naming it."""
    if not 8 <= value <= high:
        raise ValueError(f"--resolution={value}: expected an integer in [8, {high}]")


def _cmd_collect(args: argparse.Namespace) -> int:
    """Ctrl-C / SIGTERM stop it cleanly: whole episodes are committed, one line on stderr, exit 130 / 143."""
    from data.collect import CollectInterrupted
    from data.interrupts import StopOnSignal

    with StopOnSignal() as stop:
        try:
            return _collect(args)
        except CollectInterrupted as e:
            print(f"wm collect: interrupted by {e.signal}; {e.saved} episodes saved in {e.path} "
                  f"({e.new} new), the dataset is sound", file=sys.stderr)
        except BaseException:
            if stop.fired is None:
                raise
            # stopped before the writer took the dataset (or inside a Lance call that wraps the interrupt)
            print(f"wm collect: interrupted by {stop.fired}; no episode saved by this run", file=sys.stderr)
        return 143 if stop.fired == "SIGTERM" else 130


def _collect(args: argparse.Namespace) -> int:
    import envs
    from data import collect
    from data.collect import next_seed
    from envs.factors import parse_factor_args

    if args.episodes < 1:
        raise ValueError(f"--episodes={args.episodes}: expected a positive integer")
    _check_resolution(args.resolution)
    seed = args.seed
    if seed is None and args.mode == "append":
        seed = next_seed(args.out)
        if seed:
            print(f"wm collect: appending to {args.out}: episodes use seeds {seed}.. (after the highest seed on disk; "
                  f"pass --seed to choose)", file=sys.stderr)
    result = collect(
        args.env,
        args.episodes,
        args.out,
        policy=args.policy,
        split=args.split,
        codec=args.codec,
        seed=seed or 0,
        mode=args.mode,
        progress=True,
        env_kwargs={"resolution": args.resolution},
        workers=args.workers,
        severity=args.severity,
        noise=args.noise,
        commit_every=args.commit_every,
        stop_on_success=args.stop_on_success,
        max_steps=args.max_steps,
        factors=parse_factor_args(envs.factor_space(args.env), args.factor),
        ood_factors=args.ood_factor,
        codec_options=_video_options(args),
    )
    print(json.dumps(result))
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from data import open_dataset, validate_dataset

    if args.data_command == "validate":
        problems = validate_dataset(args.path)
        if problems:
            for problem in problems:
                print(f"INVALID: {problem}", file=sys.stderr)
            if any(" step rows, its length says " in p or " times in " in p for p in problems):
                print(f"wm data validate: `wm data repair {args.path}` drops duplicated or partial rows, keeping every "
                      f"whole episode", file=sys.stderr)
            return 1
        print(f"OK: {args.path} is a sound dataset")
        return 0
    if args.data_command == "repair":
        from data import repair_dataset

        result = repair_dataset(args.path)
        if not result["changed"]:
            print(f"OK: {args.path}: nothing to repair ({result['episodes']} whole episodes)")
            return 0
        for note in result["notes"]:
            print(f"wm data repair: {note}", file=sys.stderr)
        problems = validate_dataset(args.path)
        for problem in problems:
            print(f"INVALID: {problem}", file=sys.stderr)
        print(f"{'REPAIRED' if not problems else 'STILL INVALID'}: {args.path}: {result['episodes']} whole episodes kept, "
              f"{len(result['episodes_dropped'])} dropped (not whole)")
        return 1 if problems else 0
    if args.data_command == "compact":
        from data import compact_dataset

        print(json.dumps(compact_dataset(args.path)))
        return 0
    if args.data_command == "convert":
        from data.convert import convert, parse_ids

        ids = None if args.episodes is None else parse_ids(args.episodes)
        result = convert(args.src, args.dst, args.to, codec=args.codec, episodes=ids, mode=args.mode, src_format=args.src_format,
                         codec_options=_video_options(args))
        for note in result["lossy"]:
            print(f"wm data convert: lossy: {note}", file=sys.stderr)
        print(json.dumps({k: v for k, v in result.items() if k != "episode_ids"}))
        return 0
    if args.data_command == "preview":
        from pathlib import Path

        from data.preview import write_preview

        src = Path(args.path)
        out = args.out or str(src.parent / f"{src.name.removesuffix('.lance')}_preview.mp4")
        print(write_preview(src, out, args.episodes, count=args.count, cols=args.cols, scale=args.scale))
        return 0
    info = open_dataset(args.path).info()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        factors = info.pop("factors")
        for key, value in info.items():
            print(f"{key:<16} {_fmt(value) if isinstance(value, (dict, list, tuple)) else value}")
        for split, stats in factors.items():
            print(f"factors [{split}]")
            for name, st in stats.items():
                print(f"  {name:<20} min {_fmt(st['min'])}  mean {_fmt(st['mean'])}  max {_fmt(st['max'])}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from worldmodel.trainargs import parse_train_options

    if args.old_horizon is not None:
        raise ValueError(f"--horizon {args.old_horizon}: wm train calls the frames a training window predicts "
                         f"--pred-steps (use --pred-steps {args.old_horizon}); --horizon is the planning horizon of wm eval")
    # unknown family or preset, a bad config file, bad values: one line, before any data is read
    options = parse_train_options(getattr(args, "rest", []), model=args.model, preset=args.preset, config=args.config)
    train_cfg = options.train
    if not train_cfg.data:
        raise ValueError("wm train needs --data PATH (a dataset written by wm collect)")
    from data import open_dataset
    from worldmodel.train import train

    meta = open_dataset(train_cfg.data).meta
    model_cfg = options.model_config(image_size=int(meta["image_shape"][0]), action_dim=int(meta["action_dim"]))
    summary = train(model_cfg, train_cfg)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(_json(summary, default=str))
    return 0


def _check_planner_args(args: argparse.Namespace) -> tuple[dict, dict[str, float]]:
    """The planner flags of ``wm eval``, ``wm ood`` and ``wm model-or-solver`` checked before any loading: an unknown solver or
    option, objective term or bad weight, or bad step weights is one line. Returns (solver options, objective terms)."""
    from planners.objectives import parse_objective, parse_step_weights
    from planners.registry import parse_options

    options = parse_options(args.planner, args.planner_opt)
    terms = parse_objective(args.objective)
    parse_step_weights(args.step_weights)
    return options, terms


def _cmd_eval(args: argparse.Namespace) -> int:
    from benchmarks.planning import DEFAULT_BATCH_ENVS, PlannerConfig, checkpoint_data, evaluate_planning
    from benchmarks.protocol import PlanningProtocol
    from data import open_dataset
    from worldmodel.checkpoint import load_checkpoint
    from worldmodel.device import resolve_device
    from worldmodel.paths import check_output_dir

    options, terms = _check_planner_args(args)
    if args.oracle_only and args.ckpt:
        raise ValueError("--oracle-only evaluates the oracle without a model: drop --ckpt, or pass --oracle to run both")
    if not args.oracle_only and not args.ckpt:
        raise ValueError("wm eval needs --ckpt PATH (a checkpoint folder), or --oracle-only to evaluate the oracle alone")
    if args.oracle_frameskip is not None and args.oracle_frameskip < 1:
        raise ValueError(f"--oracle-frameskip={args.oracle_frameskip}: expected a positive integer")
    batch_envs = DEFAULT_BATCH_ENVS if args.batch_envs is None else args.batch_envs
    if batch_envs < 1:
        raise ValueError(f"--batch-envs={batch_envs}: expected a positive integer (environments run at once)")
    check_output_dir(args.out)
    condition = _eval_condition(args)  # a bad --env/--split/--severity/--factor: one line, before loading
    device = resolve_device(args.device)
    model = None if args.oracle_only else load_checkpoint(args.ckpt, device=device).eval()
    protocol = dataclass_from_args(PlanningProtocol, args)
    trained_on = None if model is None else checkpoint_data(args.ckpt)
    if condition is not None:
        if trained_on and trained_on.get("env_id") not in (None, args.env):
            raise ValueError(f"--ckpt {args.ckpt} was trained on {trained_on['env_id']} data, not {args.env}: "
                             f"evaluate it with --env {trained_on['env_id']}")
        resolution = args.resolution or (model.config.image_size if model is not None else 64)
        _check_resolution(resolution)
    dataset = open_dataset(args.data) if condition is None else None  # else collected for the condition, below
    planner_cfg = dataclass_from_args(PlannerConfig, args, seed=protocol.seed, planner_options=options)
    state_probe = None
    if terms.get("state", 0) > 0 and model is not None:  # the state term reads a linear probe, fitted on the training data once
        from benchmarks.state_probe import load_or_fit_state_probe

        state_probe = load_or_fit_state_probe(args.ckpt, model, device=device, log=lambda line: print(line, file=sys.stderr))

    def evaluate(dataset: Any) -> dict:
        return evaluate_planning(
            model,
            dataset,
            args.out,
            protocol=protocol,
            planner_cfg=planner_cfg,
            device=str(device),
            video=args.video,
            log=lambda line: print(line, file=sys.stderr),
            trained_on=trained_on,  # a checkpoint of another env is refused by name
            progress=True,
            oracle=args.oracle or args.oracle_only,
            oracle_frameskip=args.oracle_frameskip,
            oracle_reduce=args.oracle_reduce,
            state_probe=state_probe,
            condition=None if condition is None else condition.to_dict(),
            batch_envs=batch_envs,
            allow_train_episodes=args.allow_train_episodes,  # else pairs from episodes it trained on are refused
        )

    if condition is None:
        summary = evaluate(dataset)
    else:  # pairs collected for the condition, more of them while they give too few pairs
        from benchmarks.conditions import EVAL_SEED_BASE, plan_on_condition

        summary = plan_on_condition(evaluate, args.env, condition, os.path.join(args.out, "pairs.lance"),
                                    protocol.episodes, resolution, progress=True, log=_log,
                                    seed=EVAL_SEED_BASE if args.pair_seed is None else args.pair_seed)
    print(json.dumps(summary, indent=2))
    return 0


def _eval_condition(args: argparse.Namespace) -> Any:
    """``wm eval``'s condition (`benchmarks.conditions.EvalCondition`) from --env and its options,
    None with --data; refuses both or neither, and condition options without --env."""
    from benchmarks.conditions import EvalCondition
    from envs.factors import parse_factor_args

    given = [f"--{name.replace('_', '-')}" for name in ("split", "severity", "factor", "ood_factor", "resolution",
                                                         "pair_seed")
             if getattr(args, name) is not None] + (["--goal-source"] if args.goal_source != "expert" else [])
    if args.data and args.env:
        raise ValueError("pass either --data (pairs from a dataset) or --env (pairs collected for a condition), not both")
    if not args.data and not args.env:
        raise ValueError("wm eval needs --data PATH (a dataset of held-out episodes) or --env ID (with --split, "
                         "--severity, --factor: pairs collected for that condition)")
    if args.data:
        if given:
            raise ValueError(f"{', '.join(given)} only apply to --env (pairs collected for a condition), not to --data")
        return None
    import envs

    factors = parse_factor_args(envs.factor_space(args.env), args.factor)
    return EvalCondition(args.split, args.severity, factors, args.goal_source, tuple(args.ood_factor or ())).check(args.env)


def _cmd_ood(args: argparse.Namespace) -> int:
    from benchmarks.ood import OODConfig, run_ood, swept_factors
    from benchmarks.planning import PlannerConfig
    from benchmarks.protocol import PlanningProtocol
    from worldmodel.device import resolve_device
    from worldmodel.paths import check_output_dir
    import envs

    options, _ = _check_planner_args(args)
    envs.env_class(args.env)  # an unknown id: the closest named, before any work
    cfg = dataclass_from_args(OODConfig, args, severities=tuple(args.severities), splits=tuple(args.splits),
                              sweep_factors=tuple(args.sweep_factors))
    swept_factors(args.env, cfg.sweep_factors)  # an unknown factor or kind: refused before any work
    protocol = dataclass_from_args(PlanningProtocol, args, episodes=cfg.episodes)
    planner_cfg = dataclass_from_args(PlannerConfig, args, seed=protocol.seed, planner_options=options)
    check_output_dir(args.out)
    device = resolve_device(args.device)
    rows = run_ood(args.ckpt, args.env, args.out, cfg, protocol, planner_cfg, device=str(device), log=_log, progress=True)
    print(json.dumps(rows, indent=2))
    return 0


def _cmd_ood_pool(args: argparse.Namespace) -> int:
    from benchmarks.ood import pool_ood

    rows = pool_ood(args.runs, args.out, log=_log)
    print(json.dumps(rows, indent=2))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from benchmarks.demo import run_demo

    summary = run_demo(args.out, device=args.device, quick=args.quick, seed=args.seed)
    print(_json({k: summary[k] for k in ("success_rate", "baseline_success_rate")}))
    return 0


def _bench_factors(items: list[str] | None) -> dict:
    """``--factor NAME=VALUE`` items of ``wm bench envs`` as ``{name: value}`` (each env validates them)."""
    from envs.factors import parse_factor_value

    out: dict = {}
    for item in items or ():
        name, sep, text = str(item).partition("=")
        if not sep or not name.strip() or not text.strip():
            raise ValueError(f"--factor {item!r}: expected NAME=VALUE, e.g. distractor=4")
        if name.strip() in out:
            raise ValueError(f"--factor {name.strip()} given twice")
        out[name.strip()] = parse_factor_value(text)
    return out


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.bench_command == "data":
        from benchmarks.data import MAX_RESOLUTION as MAX_DATA_RESOLUTION, bench_data, markdown_table as data_table

        if args.seconds is not None and not (args.seconds > 0 and math.isfinite(args.seconds)):
            raise ValueError(f"--seconds={args.seconds}: expected a finite positive number")
        _check_resolution(args.resolution, MAX_DATA_RESOLUTION)
        result = bench_data(args.resolution, quick=args.quick, seconds=args.seconds, log=_log, codecs_only=args.codecs_only)
        print(_json(result, indent=2) if args.json else "\n" + data_table(result))
        return 0
    if args.bench_command == "solvers":
        from benchmarks.solvers import bench_solvers, markdown_table as solver_table

        for flag, value in (("--envs", args.envs), ("--repeats", args.repeats), ("--threads", 1 if args.threads is None else args.threads)):
            if value < 1:
                raise ValueError(f"{flag}={value}: expected a positive integer")
        if args.threads is not None:
            import torch

            torch.set_num_threads(args.threads)
        result = bench_solvers(quick=args.quick, solvers=args.solver, envs=(1, args.envs), dtype=args.dtype,
                               repeats=args.repeats, log=_log, compile=args.compile)
        print(_json(result, indent=2) if args.json else "\n" + solver_table(result))
        return 0
    if args.bench_command == "train":
        from benchmarks.train_speed import bench_train, markdown_table as train_table

        for flag, value, low in (("--batch-size", args.batch_size, 2), ("--steps", args.steps, 1),
                                 ("--warmup", args.warmup, 0), ("--threads", 1 if args.threads is None else args.threads, 1)):
            if value < low:
                raise ValueError(f"{flag}={value}: expected an integer >= {low}")
        if args.threads is not None:
            import torch

            torch.set_num_threads(args.threads)
        config, label = None, args.preset
        if args.config is not None:
            from worldmodel.families import get_family
            from worldmodel.trainargs import read_config_file

            model = read_config_file(args.config)["model"]
            config, label = get_family(model.get("family", "lewm")).config_cls.from_dict(model), args.config
        result = bench_train(label, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
                             amp=args.amp, config=config, log=_log)
        print(_json(result, indent=2) if args.json else "\n" + train_table(result))
        return 0
    if args.bench_command == "recipe":
        from benchmarks.recipes import get_recipe

        recipe = get_recipe(args.env, args.split, family=args.family)
        if args.out:
            recipe.save(args.out)
            _log(f"wrote recipe {recipe.name} (hash {recipe.hash()}) to {args.out}")
        else:
            print(json.dumps(recipe.to_dict(), indent=2))
            _log(f"recipe {recipe.name}, hash {recipe.hash()}")
        return 0
    if args.bench_command == "planning":
        from benchmarks.bench_planning import markdown_table as planning_table, run_planning_bench
        from worldmodel.device import resolve_device

        if (args.recipe is None) == (args.env is None):
            raise ValueError("wm bench planning needs --env ID (repeatable, or all) or --recipe FILE, not both")
        if args.recipe is not None and args.split:
            raise ValueError("--split applies to the registered recipes (--env), not to --recipe: set data.split in the file")
        if args.recipe is not None and args.family:
            raise ValueError("--family applies to the registered recipes (--env), not to --recipe: set "
                             "train.model.family in the file")
        results = run_planning_bench(args.env or [], args.out, seeds=args.seeds, split=args.split, recipe_file=args.recipe,
                                     family=args.family, device=str(resolve_device(args.device)), log=_log,
                                     progress=True, validation=args.validation)
        print(_json(results, indent=2) if args.json else "\n" + planning_table(results))
        return 0
    if args.bench_command == "noisy":
        from benchmarks.noisy_features import markdown_report, run_noisy
        from benchmarks.recipes import load_recipe
        from worldmodel.device import resolve_device

        distractor: str | float = args.distractor
        if distractor != "train":
            try:
                distractor = float(distractor)
            except ValueError:
                raise ValueError(f"--distractor={args.distractor!r}: expected a number of patches or 'train'") from None
        recipe = load_recipe(args.recipe) if args.recipe is not None else None
        results = run_noisy(args.env, args.out, families=args.models, steps=args.steps, episodes=args.episodes,
                            distractor=distractor, seeds=args.seeds, recipe=recipe,
                            device=str(resolve_device(args.device)), log=_log, progress=True,
                            conditions=args.conditions)
        print(_json(results, indent=2) if args.json else "\n" + markdown_report(results))
        return 0
    if args.bench_command == "experts":
        from benchmarks.experts import bench_experts, markdown_table as expert_table

        if args.episodes < 1:
            raise ValueError(f"--episodes={args.episodes}: expected a positive integer")
        results = bench_experts(args.env, episodes=args.episodes, log=_log, progress=True)
        print(_json(results, indent=2) if args.json else "\n" + expert_table(results))
        return 0
    from benchmarks.envs import bench_envs, markdown_table

    _check_resolution(args.resolution)
    if not (args.seconds >= 0 and math.isfinite(args.seconds)):
        raise ValueError(f"--seconds={args.seconds}: expected a finite number >= 0")
    factors = _bench_factors(args.factor)
    results = bench_envs(args.env, resolution=args.resolution, min_seconds=args.seconds, log=_log, progress=True,
                         factors=factors)
    if args.json:
        print(_json({env_id: round(r.steps_per_s, 1) for env_id, r in results.items()}))
    else:
        print()
        print(markdown_table(results))
    return 0


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from benchmarks.diagnose import run_diagnose, summary_lines
    from worldmodel.device import resolve_device

    device = resolve_device(args.device)
    result = run_diagnose(args.ckpt, args.data, args.out, episodes=args.episodes, steps=args.steps, seed=args.seed,
                          device=str(device), allow_train_episodes=args.allow_train_episodes, log=_log, progress=True)
    print(_json(result, indent=2) if args.json else "\n".join(summary_lines(result)))
    return 0


def _cmd_model_or_solver(args: argparse.Namespace) -> int:
    from benchmarks.model_or_solver import run_model_or_solver, summary_lines
    from benchmarks.planning import PlannerConfig
    from benchmarks.protocol import PlanningProtocol
    from worldmodel.device import resolve_device

    options, _ = _check_planner_args(args)
    protocol = dataclass_from_args(PlanningProtocol, args)
    planner_cfg = dataclass_from_args(PlannerConfig, args, seed=protocol.seed, planner_options=options)
    device = resolve_device(args.device)
    result = run_model_or_solver(args.ckpt, args.data, args.out, protocol=protocol, planner_cfg=planner_cfg,
                                 device=str(device), allow_train_episodes=args.allow_train_episodes, log=_log)
    print(_json(result, indent=2) if args.json else "\n".join(summary_lines(result)))
    return 0


def _cmd_gallery(args: argparse.Namespace) -> int:
    from envs.gallery import write_gallery

    _check_resolution(args.resolution)
    for path in write_gallery(args.out, args.env, resolution=args.resolution, seed=args.seed):
        print(path)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from benchmarks.report import build_report

    result = build_report(args.dirs, args.out, log=_log)
    print(result["report"])
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "bench": _cmd_bench,
    "gallery": _cmd_gallery,
    "diagnose": _cmd_diagnose,
    "model-or-solver": _cmd_model_or_solver,
    "envs": _cmd_envs,
    "factors": _cmd_factors,
    "collect": _cmd_collect,
    "data": _cmd_data,
    "train": _cmd_train,
    "eval": _cmd_eval,
    "demo": _cmd_demo,
    "ood": _cmd_ood,
    "ood-pool": _cmd_ood_pool,
    "report": _cmd_report,
}


#: exit status when stdout's reader went away (``wm data info PATH | head``): 128 + SIGPIPE, as a shell reports it
EXIT_BROKEN_PIPE = 141


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (assumed so where poll() is missing)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False  # not an OS-level stream: the broken pipe was another one
    try:
        import select

        poller = select.poll()
    except (ImportError, AttributeError):
        return True  # no poll() (Windows)
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wm`` console script; returns the process exit code."""
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "train":  # `wm train` hands its other options to tyro (worldmodel/trainargs.py)
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        try:
            code = COMMANDS[args.command](args)
        except (ValueError, KeyError, FileNotFoundError) as err:
            # Bad input (unknown ids, out-of-range factors, broken datasets or checkpoints)
            # is reported as one clear line, not a traceback.
            message = err.args[0] if isinstance(err, KeyError) and err.args else err
            print(f"wm {args.command}: error: {message}", file=sys.stderr)
            return 2
        sys.stdout.flush()  # a reader that went away shows here rather than at interpreter exit
        return code
    except BrokenPipeError:
        # `wm ... | head`: stop quietly, as command-line tools do. Another broken pipe is a real error.
        if not _stdout_gone():
            raise
        # Python flushes stdout again at exit; point it at devnull so that flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
