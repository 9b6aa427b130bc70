"""Reading an offline W&B run file (``run-<id>.wandb``) back, to check what a run sent.

The file is W&B's 7-byte header followed by records in LevelDB's log format (32 KiB blocks; each chunk a
7-byte header: CRC32C, little-endian length, type FULL/FIRST/MIDDLE/LAST), each record a ``Record`` protobuf.
wandb 0.31 has no Python reader of its own (its core is in Go), hence these few lines."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> list:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, out, parts = 7, [], []
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:                      # the rest of a block too short for a header is padding
            pos += left
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        chunk = data[pos + 7: pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        parts.append(chunk)
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(b"".join(parts))
            out.append(record)
            parts = []
    return out


def summary(path: str | Path) -> dict:
    """What a test checks: the run's group, job type, tags and config, the history metric names, the summary
    keys, the tables logged (as W&B references them) and the x axes defined (metric -> step metric)."""
    run, history_keys, summary_keys, tables, config, axes = None, set(), set(), {}, {}, {}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = r.run
            config.update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            for item in r.history.item:
                key = item.key or "/".join(item.nested_key)
                history_keys.add(key)
                value = json.loads(item.value_json) if item.value_json else None
                if isinstance(value, dict) and value.get("_type") == "table-file":
                    tables[key] = value
                elif key.endswith("/_type") and value == "table-file":    # stored flattened
                    tables[key[:-len("/_type")]] = value
        elif kind == "metric":
            name = r.metric.name or r.metric.glob_name
            axes[name] = r.metric.step_metric
        elif kind == "summary":
            summary_keys.update(i.key or "/".join(i.nested_key) for i in r.summary.update)
    assert run is not None, f"no run record in {path}"
    return {"group": run.run_group, "job_type": run.job_type, "tags": list(run.tags), "project": run.project,
            "config": config, "history": history_keys, "summary": summary_keys, "tables": tables,
            "axes": axes}
