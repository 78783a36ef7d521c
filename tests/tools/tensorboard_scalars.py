"""Prints the scalars TensorBoard reads from a run's out-dir, as JSON {tag: [[step, value], ...]}.

Usage: tensorboard_scalars.py RUN_DIR. It reads with TensorBoard's own EventAccumulator, which
takes the directory's event files in name order and, at a SessionLog START, drops the data held
at that step and later (purge_orphaned_data, its default), so what it prints is what TensorBoard
shows. Every value it keeps is listed, a step kept twice included.
"""
import json
import sys

from tensorboard.backend.event_processing import event_accumulator

accumulator = event_accumulator.EventAccumulator(
    sys.argv[1], size_guidance={event_accumulator.SCALARS: 0}  # 0: keep every value
)
accumulator.Reload()
print(
    json.dumps(
        {
            tag: [[e.step, e.value] for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]
        }
    )
)
