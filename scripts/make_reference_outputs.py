"""Rebuild tests/data/dust3r_reference_outputs.pt from the independent functional reference.

    .venv/bin/python scripts/make_reference_outputs.py

The outputs come from tests/dust3r_reference.py (plain torch.nn.functional, written from the
architecture facts), never from dptlearn's head; see dptlearn/course/reference_data.py.
"""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from dust3r_reference import reference_output  # noqa: E402

from dptlearn.course.reference_data import OUTPUTS_FILE, SIZES, dust3r_keys, dust3r_weights, reference_tokens  # noqa: E402


def main() -> None:
    config, _ = dust3r_keys()
    sd = dust3r_weights()
    out = {}
    for name, size in SIZES.items():
        with torch.no_grad():
            got = reference_output(sd, reference_tokens(size), size, config["dec_depth"], config["patch_size"])
        out[name] = {k: v.contiguous() for k, v in got.items()}
        print(f"{name}: image {size} -> pts3d {tuple(got['pts3d'].shape)}, conf {tuple(got['conf'].shape)}")
    torch.save(out, OUTPUTS_FILE)
    print(f"wrote {OUTPUTS_FILE} ({OUTPUTS_FILE.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
