"""`sage-ros`: one command line for weights, export, fusion, demo, bags, training and engines.

Each subcommand lives in its own module of this package and exposes
`register(subparsers) -> None`; modules are discovered so a new subcommand is one new file.
`_`-prefixed modules (`_common`, `_folder_fusion`) are helpers the subcommands share, never discovered.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from sage_ros import install_hint

# Order in `--help`; modules not listed here come after, alphabetically.
_ORDER = ["weights", "export", "fuse", "demo", "make_bag", "eval_bag", "train", "build_engine"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sage-ros",
        description="Thermal + RGB image fusion with the distilled SAGE student (CVPR 2025).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `sage-ros COMMAND --help` for the options of one command.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    names.sort(key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))
    for name in names:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ImportError as exc:
            # A robot installs only the extras it runs: the other commands stay listed and say what to install.
            _register_unavailable(subparsers, name, exc)
            continue
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


_EXTRA_OF_MODULE = {"rosbags": "eval", "skimage": "eval", "matplotlib": "eval", "torch": "torch",
                    "segment_anything": "training", "rclpy": "ros", "openvino": "openvino"}


def _register_unavailable(subparsers: argparse._SubParsersAction, name: str, exc: ImportError) -> None:
    missing = str(getattr(exc, "name", None) or exc).split(".")[0]
    extra = _EXTRA_OF_MODULE.get(missing, "all-cpu")
    message = f"needs the Python package '{missing}': {install_hint(extra)}"
    parser = subparsers.add_parser(name.replace("_", "-"), help=f"(unavailable: {message})", add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def unavailable(_args: argparse.Namespace) -> int:
        print(f"sage-ros {name.replace('_', '-')}: {message}", file=sys.stderr)
        return 1

    parser.set_defaults(func=unavailable)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="[%(levelname)s] %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
