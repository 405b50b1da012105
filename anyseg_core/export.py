"""Write a model checkpoint again with its weights in another precision.

    python -m anyseg_core.export IN.safetensors OUT.safetensors [--dtype float16]

A deployable copy of a checkpoint: the same metadata, floating parameters stored in float16
(half the size) or bfloat16; buffers stay as they are. Loading casts the weights back to the
model's dtype, so an fp16 file runs in fp32 on a CPU.
"""
from __future__ import annotations

import argparse
import sys

import torch

from .checkpoint import CheckpointError, build_model, save_model

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anyseg_core.export",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    args = ap.parse_args(argv)
    try:
        model, meta = build_model(args.checkpoint)
        path = save_model(args.out, model, meta, dtype=DTYPES[args.dtype])
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({args.dtype}, {path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
