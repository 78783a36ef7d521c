"""Training time up to each logged step of a metrics.jsonl, for the bench scripts.

Each log interval's tokens over its measured speed: the trainer measures tokens_per_s without
the time spent evaluating or checkpointing, so the clock is training time alone.
"""


def training_clock(rows, tokens_per_step):
    """({step: seconds of training up to it}, total seconds) from a run's metrics rows."""
    clock, last, t = {0: 0.0}, 0, 0.0
    for r in rows:
        if "tokens_per_s" in r:
            t += (r["step"] - last) * tokens_per_step / max(r["tokens_per_s"], 1e-9)
            clock[r["step"]] = t
            last = r["step"]
    return clock, t
