"""Regenerate the golden EfficientNet-Lite0 results (review the diff before committing).

    python tests/golden/make_golden.py
"""

import json
import tempfile
from pathlib import Path

import netdissect

SPEC = {"model": "efficientnet_lite0", "data": "synthetic:n=120,seed=7,size=224", "layers": ["blocks.4", "bn2"],
        "batch_size": 20}


def compute(out):
    result = netdissect.dissect(SPEC["model"], SPEC["data"], layers=SPEC["layers"], out=out, progress=False,
                                batch_size=SPEC["batch_size"], num_workers=0)
    golden = {"spec": SPEC, "layers": {}}
    for layer in SPEC["layers"]:
        tally = result.tally(layer)
        golden["layers"][layer] = {
            "detectors": result.summary["layers"][layer]["detectors"],
            "top": [{"unit": int(r.unit), "category": r.category, "label": r.label, "score": round(float(r.score), 6)}
                    for r in tally.head(8).itertuples()],
            "thresholds_head": [round(float(t), 6) for t in result.thresholds(layer)[:5]],
        }
    return golden


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        golden = compute(tmp)
    path = Path(__file__).with_name("efficientnet_lite0_synthetic.json")
    path.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {path}")
