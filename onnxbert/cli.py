"""`onnxbert` command line: a thin translation of flags into library calls.

Each command's implementation is imported only when it runs, so `onnxbert embed` works in a CPU-only install that has
no torch. The choices come from the runtime (ONNX Runtime and numpy imported, never torch).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from onnxbert import __version__
from onnxbert.runtime.manifest import PRECISIONS
from onnxbert.runtime.pooling import POOLINGS
from onnxbert.runtime.session import Provider

__all__ = ["build_parser", "main", "parse_args"]

_VARIANTS = ("auto", *PRECISIONS)
_PROVIDERS = tuple(provider.value for provider in Provider)
# export/int8_gate.py's LADDER, named here so that --help does not import torch (a test checks they agree)
_INT8_RECIPES = (
    "dynamic",
    "static",
    "static+rows",
    "static+rows+outlier",
    "static+rows-pairsafe",
    "static+rows+outlier-pairsafe",
)
# Commands whose positional lists may continue after options: `embed DIR --token-level "Hello" "今天"`.
_INTERMIXED = ("embed", "embed-corpus")


def _int8_recipe(value: str) -> str:
    """An automatic choice or a name that starts with a ladder recipe's; export parses the fp32 projections after it."""
    if value in ("auto", "auto-vnni", "auto-pairsafe") or value.partition(", ")[0] in _INT8_RECIPES:
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: choose auto, auto-vnni or one of {', '.join(_INT8_RECIPES)}")


def _add_export(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "export",
        help="export a BERT-family checkpoint to a verified ONNX model directory",
        description="Export MODEL (a Hugging Face checkpoint directory or hub id of model type bert, roberta, "
        "xlm-roberta, distilbert or electra; Google's TensorFlow BERT release folder or bert_model.ckpt prefix; "
        "default: the embedded all-MiniLM-L6-v2) to DIR: fused fp32, int8 (CPU; the fastest recipe within "
        "--int8-quality) and/or fp16 (CUDA), "
        "each verified against transformers first.",
    )
    parser.add_argument("model", nargs="?", default=None, help="checkpoint directory, Google release, or hub id")
    parser.add_argument("--output", "-o", required=True, help="model directory to write")
    parser.add_argument("--variants", default="fp32,int8", help="comma-separated: fp32,int8,fp16 (default fp32,int8)")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per text (default: from the model)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default 17)")
    parser.add_argument(
        "--int8-quality",
        default="strict",
        help="what int8 must keep of fp32 on the selection and held-out text: strict (mean cosine >= 0.998, top-10 "
        "neighbours >= 0.97, Spearman within 0.005 where scored pairs exist), balanced (0.995 / 0.93 / 0.01), "
        "any, or cos=..,top10=..,spearman=.. (default strict); no recipe within it is an error",
    )
    parser.add_argument(
        "--int8-recipe",
        type=_int8_recipe,
        default="auto",
        metavar="RECIPE",
        help="auto: the fastest pair-safe recipe within --int8-quality on this CPU (with projections in fp32 if none "
        "passes), a graph every x86 CPU runs exactly on its fast int8 kernel, AVX2 included (default; auto-pairsafe "
        "is the same); auto-vnni: the same among the plain recipes, for servers that all have VNNI or AMX (without "
        "them it runs the exact, slower kernel); a name (" + ", ".join(_INT8_RECIPES) + "): only that one, still "
        "gated, with any projections an earlier export kept in fp32 as its manifest names them "
        "('static+rows+outlier-pairsafe, layer 0 ffn_out fp32')",
    )
    parser.add_argument(
        "--int8-text",
        metavar="FILE",
        default=None,
        help="your text for int8 (a text file, one per line; .jsonl; or .parquet), at least 300 texts (a sample of "
        "20,000 from a larger file; each text's first 4,096 characters): split at random into calibration, selection "
        "and held-out parts (default: STS-B English, or Chinese news and reviews for a mostly-CJK vocabulary)",
    )
    parser.add_argument("--int8-text-field", default="text", help="JSONL key / Parquet column of --int8-text")
    parser.add_argument(
        "--int8-headroom",
        type=float,
        default=None,
        metavar="TOP10",
        help="top-10 agreement the int8 search asks of its own texts on top of --int8-quality's, so that text it "
        "never saw keeps the budget (default: 0.005 with --int8-text, whose held-out part is the same file's; 0 for "
        "the default text, gated on another genre); recorded in the manifest beside the budget",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing non-empty DIR")
    parser.add_argument(
        "--lowercase",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Google releases only: whether the tokenizer lower-cases and strips accents (default: read from the "
        "release's folder name, e.g. uncased_/chinese_ vs cased_, else from its vocabulary)",
    )


def _add_session_options(parser: argparse.ArgumentParser) -> None:
    """Which variant runs where, on how many threads: the Encoder's own options."""
    parser.add_argument("--variant", choices=_VARIANTS, default="auto")
    parser.add_argument("--provider", choices=_PROVIDERS, default="auto")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")


def _add_embed(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "embed",
        help="embed texts with a model directory",
        description="Embed TEXT arguments or the lines / JSONL records / Parquet column of --input, streamed in "
        "chunks (a pipe too). Writes .npy or .jsonl to --output, whole or not at all, or JSON lines to stdout.",
    )
    parser.add_argument("directory", help="model directory written by `onnxbert export`")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed")
    parser.add_argument("--input", "-i", help="a text file (one text per line), .jsonl or .parquet file")
    parser.add_argument("--field", default="text", help="JSONL field or Parquet column of the text (default: text)")
    parser.add_argument("--output", "-o", help="write .npy (pooled) or .jsonl; default: JSON lines on stdout")
    parser.add_argument("--pooling", choices=POOLINGS, default=None, help="default: the model's")
    parser.add_argument("--normalize", action="store_true", help="L2-normalize pooled vectors")
    parser.add_argument("--token-level", action="store_true", help="emit per-token hidden states (JSONL)")
    parser.add_argument("--summary", action="store_true", help="print a readable summary and cosine similarities")
    _add_session_options(parser)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="runs in flight at once, each on its own thread; for a large --input, --threads 1 --workers CORES is "
        "faster than one run at a time on every core (default 1)",
    )
    parser.add_argument("--max-length", type=int, default=None, help="truncate texts to this many tokens")


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve a model directory over HTTP (OpenAI /v1/embeddings, TEI /embed, /embed_all)",
        description="An ASGI server with a dynamic batcher in front of one Encoder. Binds 127.0.0.1 unless --host "
        "says otherwise. SIGTERM drains in-flight requests and exits 0.",
    )
    parser.add_argument("directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8080)
    _add_session_options(parser)
    parser.add_argument("--max-batch-tokens", type=int, default=8192, help="real tokens per Encoder call")
    parser.add_argument("--max-batch-texts", type=int, default=32, help="texts per Encoder call (default 32)")
    parser.add_argument(
        "--max-run-texts",
        type=int,
        default=32,
        help="most rows per graph run within a call (a row: one text, or several when packed); default 32",
    )
    parser.add_argument("--max-wait-ms", type=float, default=0.0, help="wait for company when idle (default 0)")
    parser.add_argument(
        "--refill-gap-ms",
        type=float,
        default=0.5,
        help="after a batch, wait for the clients it answered while their next requests keep arriving, each within "
        "this gap, so the next batch holds them too; 0 turns it off (default 0.5)",
    )
    parser.add_argument(
        "--packing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="several texts per graph row, no padding, where the directory has a packed graph (default on)",
    )
    parser.add_argument(
        "--spinning",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="idle inference threads spin for the next run: lower latency at light load, but a busy core even "
        "at a few requests/s; for machines dedicated to the server (default off)",
    )
    parser.add_argument("--max-queue", type=int, default=2048, help="texts waiting before 429 (default 2048)")
    parser.add_argument(
        "--max-queue-tokens", type=int, default=65_536, help="real tokens waiting before 429 (default 65536)"
    )
    parser.add_argument(
        "--max-text-chars", type=int, default=100_000, help="characters per text before 422 (default 100000)"
    )
    parser.add_argument(
        "--max-header-bytes", type=int, default=32_768, help="request line + headers, bytes, before 431 (default 32768)"
    )
    parser.add_argument("--max-headers", type=int, default=100, help="header fields before 431 (default 100)")
    parser.add_argument(
        "--header-timeout", type=float, default=10.0, help="seconds for a request's head to arrive, else 408 (10)"
    )
    parser.add_argument(
        "--body-timeout", type=float, default=30.0, help="seconds for a request's body to arrive, else 408 (30)"
    )
    parser.add_argument("--idle-timeout", type=int, default=5, help="idle keep-alive seconds before close (5)")
    parser.add_argument(
        "--max-embed-all-tokens", type=int, default=4096, help="tokens per /embed_all request before 422 (default 4096)"
    )
    parser.add_argument("--max-client-batch", type=int, default=64, help="inputs per request (default 64)")
    parser.add_argument("--payload-limit", type=int, default=2_000_000, help="request bytes (default 2 MB)")
    parser.add_argument(
        "--max-concurrent-requests",
        type=int,
        default=512,
        help="requests admitted and not yet answered before 429, /health and /metrics aside (default 512)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=4096,
        help="open connections, idle or sending, before a new one gets 503 unread (default 4096)",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY'; better $ONNXBERT_API_KEY, which other users cannot read in `ps`",
    )
    parser.add_argument("--model-name", default=None, help="model name reported by /v1/embeddings")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    parser.add_argument(
        "--drain-timeout",
        type=int,
        default=30,
        help="seconds SIGTERM waits for requests in flight; past it they are cancelled and the exit status is 1 "
        "(default 30; keep it under the orchestrator's grace period)",
    )


def _add_embed_corpus(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "embed-corpus",
        help="embed Parquet / JSONL / text files into Parquet, one output per input, resumable",
        description="Each INPUT becomes OUTDIR/<stem>.parquet (columns text, embedding), written atomically; "
        "inputs whose output exists are skipped, so a killed run resumes. In-process unless --ray.",
    )
    parser.add_argument("directory", help="model directory")
    parser.add_argument("inputs", nargs="+", metavar="INPUT")
    parser.add_argument("--output", "-o", required=True, help="output directory")
    parser.add_argument("--column", default="text", help="text column (Parquet) or field (JSONL); default text")
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray Data: a local cluster, or the cluster at ADDRESS",
    )
    parser.add_argument("--pooling", choices=POOLINGS, default=None)
    parser.add_argument("--normalize", action="store_true")
    parser.add_argument("--variant", choices=_VARIANTS, default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="ONNX Runtime threads per run (default 1: each core runs its own run, in-process or one Ray actor each)",
    )


def _add_info(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("info", help="show a model directory's manifest and verification figures")
    parser.add_argument("directory")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")


def build_parser() -> argparse.ArgumentParser:
    """The `onnxbert` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="onnxbert", description="Run BERT-family encoders without PyTorch.")
    parser.add_argument("--version", action="version", version=f"onnxbert {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_export(commands)
    _add_embed(commands)
    _add_serve(commands)
    _add_embed_corpus(commands)
    _add_info(commands)
    return parser


def _run_embed_corpus(args: argparse.Namespace) -> int:
    from pathlib import Path

    from onnxbert.distributed import CorpusJob, embed_corpus

    job = CorpusJob(
        Path(args.directory),
        column=args.column,
        pooling=args.pooling,
        normalize=args.normalize,
        variant=args.variant,
        threads=args.threads,
    )
    embed_corpus(job, args.inputs, args.output, use_ray=args.ray is not None, ray_address=args.ray or None)
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    from onnxbert.serve import ServerSettings, serve

    settings = ServerSettings(
        variant=args.variant,
        provider=args.provider,
        threads=args.threads,
        max_batch_tokens=args.max_batch_tokens,
        max_batch_texts=args.max_batch_texts,
        max_run_texts=args.max_run_texts,
        packing=args.packing,
        spinning=args.spinning,
        max_wait_ms=args.max_wait_ms,
        refill_gap_ms=args.refill_gap_ms,
        max_queue=args.max_queue,
        max_queue_tokens=args.max_queue_tokens,
        max_text_chars=args.max_text_chars,
        max_embed_all_tokens=args.max_embed_all_tokens,
        max_client_batch=args.max_client_batch,
        payload_limit=args.payload_limit,
        max_concurrent_requests=args.max_concurrent_requests,
        max_connections=args.max_connections,
        max_header_bytes=args.max_header_bytes,
        max_headers=args.max_headers,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        idle_timeout_s=args.idle_timeout,
        # The environment is read here, at the edge; a key given but empty is an error, never "no key".
        api_key=args.api_key if args.api_key is not None else os.environ.get("ONNXBERT_API_KEY"),
        model_name=args.model_name,
    )
    return serve(
        args.directory,
        settings,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        drain_seconds=args.drain_timeout,
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parsed flags; texts and inputs may come after options in `embed` and `embed-corpus`."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] and words[0] in _INTERMIXED:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        args: argparse.Namespace = commands.choices[words[0]].parse_intermixed_args(words[1:])
        args.command = words[0]
        return args
    return parser.parse_args(words)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `onnxbert` console script; returns the process exit code."""
    args = parse_args(argv)
    try:
        if args.command == "export":
            from onnxbert.export.cli import run_export

            return run_export(args)
        if args.command == "serve":
            return _run_serve(args)
        if args.command == "embed-corpus":
            return _run_embed_corpus(args)
        from onnxbert.runtime import cli as runtime_cli

        return runtime_cli.run_embed(args) if args.command == "embed" else runtime_cli.run_info(args)
    except (ValueError, RuntimeError, OSError, ImportError) as error:
        print(f"onnxbert {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
