"""The `itk` command line.

Subcommands stay thin: each parses its arguments, checks them, and calls one library function,
so everything the CLI does is also a plain Python call.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _tiny_models(args: argparse.Namespace) -> None:
    from itk_rl.testbed.lexicon import corpus
    from itk_rl.tiny import build_tiny_models

    text_corpus = list(corpus()) if args.tokenizer == "word" else None
    paths = build_tiny_models(
        Path(args.out_dir), tokenizer_kind=args.tokenizer, corpus=text_corpus, seed=args.seed
    )
    for name, path in vars(paths).items():
        print(f"{name}: {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="itk", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    tiny = commands.add_parser(
        "tiny-models",
        help="build tiny random-weight models offline (tokenizer, Qwen2.5-VL, Qwen3-VL, Klein)",
    )
    tiny.add_argument("out_dir", help="folder to write the models into (reused if complete)")
    tiny.add_argument(
        "--tokenizer",
        choices=["byte", "word"],
        default="byte",
        help="byte-level (any text), or word-level BPE trained on the testbed corpus",
    )
    tiny.add_argument("--seed", type=int, default=0, help="seed for the random weights")
    tiny.set_defaults(run=_tiny_models)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
