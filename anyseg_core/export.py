"""Export a model checkpoint for deployment.

    python -m anyseg_core.export IN.safetensors OUT.safetensors [--dtype float16]
    python -m anyseg_core.export IN.safetensors --format onnx --out OUT.onnx \\
        [--size 288x512] [--precision fp32|fp16]

``--format safetensors`` (the default): the same checkpoint with its floating parameters
stored in float16 (half the size) or bfloat16; buffers stay as they are. Loading casts the
weights back to the model's dtype, so an fp16 file runs in fp32 on a CPU.

``--format onnx``: a directory of one static ONNX graph per modality subset, at one network
size, with the checkpoint's metadata and hash (:mod:`anyseg_core.deploy`), which
``Runtime(OUT, backend="onnxruntime" | "openvino")`` and the node's ``backend`` parameter run.
Needs the deploy extra (onnx, onnxscript, onnxruntime).
"""
from __future__ import annotations

import argparse
import sys

import torch

from .checkpoint import CheckpointError, build_model, save_model

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
FORMATS = ("safetensors", "onnx")


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 288x512, got {text!r}")
    return h, w


def main(argv=None) -> int:
    from .deploy import EXPORT_PRECISIONS, export_onnx

    ap = argparse.ArgumentParser(prog="python -m anyseg_core.export",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out_path", nargs="?", metavar="OUT", help="the output (or --out)")
    ap.add_argument("--out", help="the output path")
    ap.add_argument("--format", choices=FORMATS, default="safetensors")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float16",
                    help="safetensors: the weights' dtype")
    ap.add_argument("--size", type=_size, help="onnx: network HxW (default: the "
                    "checkpoint's training size)")
    ap.add_argument("--precision", choices=EXPORT_PRECISIONS, default="fp32",
                    help="onnx: fp32, or fp16 graphs with fp32 inputs and outputs (GPUs)")
    args = ap.parse_args(argv)
    out = args.out or args.out_path
    if not out or (args.out and args.out_path):
        ap.error("give the output once: OUT or --out OUT")
    try:
        if args.format == "onnx":
            path = export_onnx(args.checkpoint, out, args.size, args.precision,
                               log=lambda line: print(line, file=sys.stderr))
            size = sum(f.stat().st_size for f in path.iterdir())
            print(f"wrote {path} (onnx, {args.precision}, {size / 2**20:.1f} MiB)")
            return 0
        model, meta = build_model(args.checkpoint)
        path = save_model(out, model, meta, dtype=DTYPES[args.dtype])
    except (CheckpointError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"error: {e.name or e} is not installed: pip install 'anyseg_ros[deploy]'",
              file=sys.stderr)
        return 2
    print(f"wrote {path} ({args.dtype}, {path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
