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
    from itk_rl.testbed.tasks import corpus
    from itk_rl.tiny import build_tiny_models

    text_corpus = list(corpus()) if args.tokenizer == "word" else None
    paths = build_tiny_models(
        Path(args.out_dir), tokenizer_kind=args.tokenizer, corpus=text_corpus, seed=args.seed
    )
    for name, path in vars(paths).items():
        print(f"{name}: {path}")


def _generate(args: argparse.Namespace) -> int:
    from itk_rl.job import RecipeError
    from itk_rl.pipeline.generate import generate_command

    def log(line: str) -> None:
        print(f"[itk] {line}", file=sys.stderr, flush=True)

    words = list(args.words)
    text = None if args.batch is not None or not words else words.pop(0)
    try:
        return generate_command(
            text, args.image, args.batch, args.out, args.config_name, words, log
        )
    except (RecipeError, ValueError, FileNotFoundError) as exc:
        print(f"itk generate: error: {exc}", file=sys.stderr)
        return 2


def _eval(args: argparse.Namespace) -> int:
    from itk_rl.eval.command import compare_command, eval_command
    from itk_rl.job import RecipeError

    def log(line: str) -> None:
        print(f"[itk] {line}", file=sys.stderr, flush=True)

    first, *rest = args.words
    try:
        if first == "compare":
            print(compare_command(rest, args.out), end="")
            return 0
        return eval_command(first, rest, args.out, args.yes, log)
    except (RecipeError, ValueError, FileNotFoundError) as exc:
        print(f"itk eval: error: {exc}", file=sys.stderr)
        return 2


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

    gen = commands.add_parser(
        "generate",
        help="run planner -> generator -> critic on a request; write a run folder (page, "
        "trajectory, images)",
        description="Run the interleaved pipeline of a recipe on one request, or on a JSONL "
        "batch. Hydra overrides follow the request, e.g. generator.misrender_prob=0.5 "
        "critic=none.",
    )
    gen.add_argument(
        "words",
        nargs="*",
        metavar="REQUEST [OVERRIDE ...]",
        help="the request text (omit with --batch), then Hydra overrides (key=value)",
    )
    gen.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH",
        help="an input image for the request (repeat for several)",
    )
    gen.add_argument(
        "--batch",
        metavar="FILE",
        help='JSONL of {"id", "text", "images"} requests; resumable (finished ids are skipped)',
    )
    gen.add_argument(
        "--out",
        metavar="DIR",
        help="run folder (default itk_runs/<time>-<request>); with --batch, the folder of "
        "the run folders",
    )
    gen.add_argument(
        "--config-name",
        default="generate_testbed",
        help="recipe from itk_rl.recipes: generate_testbed (default), generate_real, generate_tiny",
    )
    gen.set_defaults(run=_generate)

    bench = commands.add_parser(
        "eval",
        help="run a benchmark (wise, wise_verified, rise, ueval, comm) on a system and score it "
        "as its authors do; or compare runs",
        description="Run recipe eval_BENCHMARK: generate the benchmark's outputs in its official "
        "layout (resumable), judge them (cached), score them with the official rules, and "
        "write results.md, results.json and gallery.html. `itk eval compare RUN ...` prints "
        "one table for runs of the same benchmark. Hydra overrides follow the benchmark, e.g. "
        "system=generator_alone generator=openai_images.",
    )
    bench.add_argument(
        "words",
        nargs="+",
        metavar="BENCHMARK [OVERRIDE ...] | compare RUN ...",
        help="wise, wise_verified, rise, ueval or comm, then Hydra overrides; or `compare` "
        "and run folders",
    )
    bench.add_argument(
        "--out",
        metavar="PATH",
        help="the run folder (default: the recipe's out_dir); with compare, a Markdown file "
        "to write the table to",
    )
    bench.add_argument(
        "--yes",
        action="store_true",
        help="go on with calls to paid APIs (counted and priced before the run)",
    )
    bench.set_defaults(run=_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Hydra overrides may come after options (`itk generate "…" --image a.png x=1`): keep the
    # leftovers of `generate` and `eval` as more words; anything else left over is an error.
    args, extra = parser.parse_known_args(argv)
    unknown = [word for word in extra if word.startswith("-")]
    if extra and (args.command not in ("generate", "eval") or unknown):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.words = [*args.words, *extra]
    return args.run(args) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
