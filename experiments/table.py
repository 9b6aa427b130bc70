"""Markdown table (seed 000 table 1 / seed 002 table 3 shape) from metrics.json files of difgan.evaluate.

    python experiments/table.py "no guidance=runs/dg/none.json" "D1, w=1=runs/dg/d1_w1.json" ...
"""

from __future__ import annotations

import json
import sys


def main(pairs: list[str]) -> None:
    rows = []
    for pair in pairs:
        label, path = pair.rsplit("=", 1) if "=" in pair else (pair, pair)
        m = json.load(open(path))
        metrics, proto = m["metrics"], m["protocol"]
        g = proto.get("guidance") or []
        guid = "; ".join(f"w={x['weight']} {x['num_discriminators']}D {x['ensemble']}" for x in g) or "-"
        rows.append((label, metrics, guid, proto.get("n_generated"), proto.get("time_s", {}).get("total")))
    keys = [k for k in ("is_domain", "fid_domain", "kid_domain", "class_accuracy_domain") if k in rows[0][1]]
    print("| run | " + " | ".join(keys) + " | guidance | n | eval s |")
    print("|---" * (len(keys) + 4) + "|")
    for label, metrics, guid, n, t in rows:
        cells = []
        for k in keys:
            v, s = metrics.get(k), metrics.get(f"{k}_std")
            fmt = ".4f" if k.startswith("kid") else ".2f"
            cells.append("-" if v is None else f"{v:{fmt}}" + (f" ± {s:{fmt}}" if s is not None else ""))
        secs = f"{t:.0f}" if t else "-"
        print(f"| {label} | " + " | ".join(cells) + f" | {guid} | {n} | {secs} |")


if __name__ == "__main__":
    main(sys.argv[1:])
