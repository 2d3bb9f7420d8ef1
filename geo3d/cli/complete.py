"""``geo3d complete RGB SPARSE --out DEPTH.png``: depth completion of one frame from the command line."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from geo3d.errors import InputError


def _cmd_complete(args: argparse.Namespace) -> None:
    import numpy as np

    from geo3d.cli.paths import check_output_file
    from geo3d.io.atomic import atomic_path
    from geo3d.io.depth_png import write_depth_png
    from geo3d.types import DepthMap
    from geo3d.zoo import resolve
    from pipelines.depth.data import read_image, read_sparse
    from pipelines.depth.predict import complete_frame

    method = "model" if args.ckpt is not None else args.method
    if method == "model" and args.ckpt is None:
        raise InputError(None, "give --ckpt CKPT (a trained DepthCompletion checkpoint) or --method "
                               "ip_basic|linear|nearest")
    ckpt = None if args.ckpt is None else resolve(args.ckpt)  # zoo:NAME -> the entry's verified weights file
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".npy"):
        raise InputError(out, "expected a .png (uint16, metres x depth scale) or .npy (float32 metres) output")
    for path in (out, args.uncertainty, args.view):
        if path is not None:
            check_output_file(path)
    image = read_image(args.rgb)
    sparse = read_sparse(args.sparse, args.depth_scale, shape=image.shape[:2])
    result = complete_frame(image, sparse, method, ckpt, args.device, args.max_depth)

    def write(path: Path, depth) -> None:
        if path.suffix.lower() == ".npy":
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, depth.numpy().astype(np.float32))
        else:
            write_depth_png(path, DepthMap(depth.clamp(max=65535 / args.depth_scale)), scale=args.depth_scale)

    write(out, result.depth)
    written = [str(out)]
    if args.uncertainty is not None:
        if result.uncertainty is None:
            raise InputError(None, f"--uncertainty: method {method} has no uncertainty (only the model does)")
        write(Path(args.uncertainty), result.uncertainty)
        written.append(str(args.uncertainty))
    if args.view is not None:
        from viewers.depth import depth_comparison_png

        depth_comparison_png(image, sparse, result.depth, args.view, uncertainty=result.uncertainty)
        written.append(str(args.view))
    valid = int((sparse > 0).sum())
    print(f"completed {args.sparse} ({valid:,} sparse points, {sparse.shape[0]} x {sparse.shape[1]}) with {method} "
          f"in {result.seconds:.3f} s -> {', '.join(written)}")


def add_complete(sub) -> None:
    """Register ``geo3d complete`` on an argparse subparsers object."""
    p = sub.add_parser(
        "complete", help="depth completion of one frame (RGB + sparse depth -> dense depth PNG)",
        description="Complete a sparse depth map with a trained model (--ckpt) or a classical method "
                    "(--method). Inputs: an RGB image and a sparse depth map of the same size (16-bit PNG with "
                    "--depth-scale codes per metre, KITTI: 256; or an .npy array in metres), 0 = missing. "
                    "Output: a 16-bit PNG in the same encoding, or .npy in metres.",
        epilog=textwrap.dedent("""\
            examples:
              geo3d complete rgb.png sparse_depth.png --out dense.png --method ip_basic
              geo3d complete rgb.png sparse_depth.png --out dense.png --ckpt last.ckpt --uncertainty std.png \\
                  --view panels.png
              geo3d complete image.png sparse_100.npy --out dense.npy --ckpt last.ckpt
              geo3d complete rgb.png sparse_depth.png --out dense.png --ckpt zoo:omni_dc"""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("rgb", type=Path, help="RGB image (PNG/JPG)")
    p.add_argument("sparse", type=Path, help="sparse depth: 16-bit PNG or .npy (metres), 0 = missing")
    p.add_argument("--out", type=Path, required=True, metavar="DEPTH", help="output .png (uint16) or .npy")
    p.add_argument("--ckpt", metavar="CKPT",
                   help="a DepthCompletion checkpoint (the learned model), or zoo:NAME (e.g. zoo:omni_dc)")
    p.add_argument("--method", choices=["ip_basic", "linear", "nearest"], default="ip_basic",
                   help="classical method when no --ckpt is given (default ip_basic)")
    p.add_argument("--depth-scale", type=float, default=256.0, metavar="CODES",
                   help="PNG codes per metre, for the sparse input and the output (default 256, KITTI)")
    p.add_argument("--max-depth", type=float, default=100.0, metavar="M", help="IP-Basic's maximum depth (100 m)")
    p.add_argument("--uncertainty", type=Path, metavar="STD",
                   help="model only: also write the per-pixel standard deviation (same encoding as --out)")
    p.add_argument("--view", type=Path, metavar="PNG", help="also write a colour-mapped comparison PNG")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.set_defaults(func=_cmd_complete)
