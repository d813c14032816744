"""Build, extend and inspect MGA index folders.

  python -m index_builder --gallery SRC --out DIR [--weights W] [--csv META.csv] [--index-type auto|flat|hnsw|ivfpq]
                          [--resume] [--shard i/N] [--zoom-grid 4] [--batch-size N] [--workers N]
                          [--ray [ADDRESS] [--ray-workers N] [--ray-cpus-per-worker C] [--ray-gpus-per-worker G]]
  python -m index_builder merge --out DIR SHARD_DIR [SHARD_DIR ...]
  python -m index_builder add --index DIR --gallery SRC [--csv META.csv] [--weights W]
  python -m index_builder remove --index DIR (--paths P [P ...] | --item-ids ID [ID ...])
  python -m index_builder info --index DIR
  python -m index_builder convert --index DIR [--out DIR2] [--tokens int4|int8|float16]

SRC is a folder of images (any depth; metadata from --csv or a metadata.csv / items.csv at its root, keyed by
the relative path in a `path` or `image_name` column), or a DeepFashion In-shop / Consumer-to-shop data set
(recognised by Eval/list_eval_partition.txt; its gallery split / test shop photos are indexed).
Each image is indexed as its full photo plus zoom windows over the garment (mga.views), so that a close-up
query finds it; an image scores as its best view.

An index stores per view its global and part tokens, coded in 4 bits with a scale per vector by default
(--tokens int8, or float16: the scores exactly as format 2 gave them), and where the view lies; the coarse
embedding that FAISS searches is rebuilt from the tokens, and the part maps of a heatmap come from encoding the
view that matched again (docs/index-format.md). `info` prints the bytes per photo; `convert` rewrites an index of
an older format (or with other tokens) in the current one, without encoding anything again.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from mga.index_format import DEFAULT_TOKENS, TOKEN_DTYPES
from mga.views import ZoomViews

from .build import DEFAULT_CHUNK, DEFAULT_THUMB
from .distributed import DEFAULT_RAY_WORKERS
from .faiss_index import INDEX_TYPES

SUBCOMMANDS = ("build", "merge", "add", "remove", "info", "convert")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="Hub id (org/name[@rev]) or checkpoint folder; default: embedded default")
    p.add_argument("--csv", help="metadata CSV keyed by relative image path (default: SRC/metadata.csv or items.csv)")
    p.add_argument("--index-type", choices=INDEX_TYPES, default="auto",
                   help="auto: exact flat below 50k vectors (views), HNSW above (IVF-PQ above 5M)")
    p.add_argument("--batch-size", type=int,
                   help="most views per forward (default: the device's, config.FORWARD_BATCH)")
    p.add_argument("--workers", type=int, help="decoding processes (default: the device's, config.LOADER_WORKERS)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK,
                   help="images per persisted chunk (the --resume unit)")
    p.add_argument("--thumb-size", type=int, default=DEFAULT_THUMB,
                   help="write <=N px JPEG thumbnails of bigger originals for the app (default 0: none; costs "
                        "build speed)")
    p.add_argument("--no-fast-decode", dest="fast_decode", action="store_false",
                   help="decode JPEGs at full size (default: reduced-scale DCT decoding down to twice the "
                        "model's input side)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser(cmd: str) -> argparse.ArgumentParser:
    prog = "python -m index_builder" + ("" if cmd == "build" else f" {cmd}")
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if cmd == "build":
        p.add_argument("--gallery", required=True, help="folder of images or In-shop / Consumer-to-shop data set")
        p.add_argument("--out", required=True, help="index folder to (re)place atomically")
        p.add_argument("--resume", action="store_true", help="continue an interrupted build of the same gallery")
        p.add_argument("--shard", help="i/N: index only shard i of N (deterministic split by path hash)")
        p.add_argument("--zoom-grid", type=int, default=ZoomViews().grid,
                       help="zoom views: also index an N x N grid of close-up windows per image (0: full photos only)")
        p.add_argument("--zoom-scale", type=float, default=ZoomViews().scale, help="window side / garment size")
        p.add_argument("--zoom-min-cover", type=float, default=ZoomViews().min_cover,
                       help="leave out windows with less garment (non-white) than this fraction")
        p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="encode on Ray workers (pip install -r requirements-scale.txt): a cluster's address, "
                            "or none to start a local Ray on this machine")
        p.add_argument("--ray-workers", type=int, default=DEFAULT_RAY_WORKERS, help="Ray workers (one model each)")
        p.add_argument("--ray-cpus-per-worker", type=float, default=1.0)
        p.add_argument("--ray-gpus-per-worker", type=float, default=0.0)
        p.add_argument("--tokens", choices=TOKEN_DTYPES, default=DEFAULT_TOKENS,
                       help="how the global and part tokens are stored: int4 (default: 4 bits and a float16 scale "
                            "per vector), int8, or float16 (the scores exactly as format 2 gave them)")
        _common(p)
    elif cmd == "merge":
        p.add_argument("--out", required=True)
        p.add_argument("shards", nargs="+", help="index folders built with the same weights")
        p.add_argument("--index-type", choices=INDEX_TYPES, default="auto")
        p.add_argument("--quiet", action="store_true")
    elif cmd == "add":
        p.add_argument("--index", required=True)
        p.add_argument("--gallery", required=True)
        _common(p)
    elif cmd == "remove":
        p.add_argument("--index", required=True)
        p.add_argument("--paths", nargs="*", default=[], help="relative (to the gallery root) or absolute paths")
        p.add_argument("--item-ids", nargs="*", default=[])
        p.add_argument("--index-type", choices=INDEX_TYPES, default="auto")
        p.add_argument("--quiet", action="store_true")
    elif cmd == "info":
        p.add_argument("--index", required=True)
    elif cmd == "convert":
        p.add_argument("--index", required=True, help="index folder of any format this code reads")
        p.add_argument("--out", help="write the converted index here (default: replace --index, atomically)")
        p.add_argument("--tokens", choices=TOKEN_DTYPES, default=DEFAULT_TOKENS)
        p.add_argument("--index-type", choices=INDEX_TYPES, default="auto")
        p.add_argument("--quiet", action="store_true")
    return p


def _model(args):
    from mga.devices import resolve_device
    from mga.hub import load_model

    return load_model(args.weights, device=str(resolve_device(args.device)))


def _ray_runner(args):
    """`--ray`: a RayRunner, or None (this process encodes)."""
    if args.ray is None:
        return None
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ValueError("--ray needs Ray, an optional extra: pip install -r requirements-scale.txt") from None
    from .distributed import RayRunner

    return RayRunner(None if args.ray == "local" else args.ray, args.ray_workers, args.ray_cpus_per_worker,
                     args.ray_gpus_per_worker, args.batch_size)


def _build_kwargs(args) -> dict:
    return dict(batch_size=args.batch_size, workers=args.workers, chunk_size=args.chunk_size,
                thumb_size=args.thumb_size, fast_decode=args.fast_decode, progress=not args.quiet)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "build"
    args = build_parser(cmd).parse_args(argv)
    from mga.hub import WeightsError
    from mga.index_format import IndexFormatError

    from . import BuildError, add_to_index, build_index, merge_indexes, remove_from_index

    try:
        if cmd == "build":
            build_index(args.gallery, args.out, model=_model(args), weights=args.weights, csv=args.csv,
                        index_type=args.index_type, resume=args.resume, shard=args.shard, runner=_ray_runner(args),
                        zoom=ZoomViews(args.zoom_grid, args.zoom_scale, args.zoom_min_cover), tokens=args.tokens,
                        **_build_kwargs(args))
        elif cmd == "merge":
            merge_indexes(args.out, args.shards, index_type=args.index_type, progress=not args.quiet)
        elif cmd == "add":
            add_to_index(args.index, args.gallery, csv=args.csv, weights=args.weights, model=_model(args),
                         index_type=args.index_type, **_build_kwargs(args))
        elif cmd == "remove":
            if not args.paths and not args.item_ids:
                print("remove: give --paths and/or --item-ids", file=sys.stderr)
                return 2
            _, n = remove_from_index(args.index, args.paths, args.item_ids, args.index_type, not args.quiet)
            print(f"removed {n} images from {args.index}", file=sys.stderr)
        elif cmd == "info":
            from mga.index import GalleryIndex

            from .writer import disk_bytes

            ix = GalleryIndex(args.index)
            m = ix.manifest
            m = {k: v for k, v in m.items() if k != "skipped"} | {"skipped": len(m.get("skipped", [])),
                                                                  "disk": disk_bytes(ix)}
            print(json.dumps(m, indent=2, ensure_ascii=False))
            d = m["disk"]
            print(f"{args.index}: format {ix.format_version}, {len(ix)} photos, {ix.views} views; "
                  f"{d['bytes'] / 2**20:,.1f} MB on disk, {d['per_photo'] / 1000:,.1f} kB per photo, "
                  f"{d['per_view']:,.0f} B per view", file=sys.stderr)
        elif cmd == "convert":
            from .edit import convert_index

            convert_index(args.index, args.out, args.tokens, args.index_type, progress=not args.quiet)
    except (BuildError, WeightsError, IndexFormatError, FileNotFoundError, ValueError) as exc:
        if _caused_by_ctrl_c(exc):  # Ctrl-C inside a writer (np.savez) that then failed to close its file
            return _interrupted(cmd)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted(cmd)
    return 0


def _caused_by_ctrl_c(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__context__
    return False


def _interrupted(cmd: str) -> int:
    again = " (its finished chunks are kept: run the same command with --resume)" if cmd == "build" else ""
    print(f"\ninterrupted: any index already there is unchanged{again}", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
