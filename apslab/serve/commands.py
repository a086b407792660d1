"""``apslab serve``: the live FastAPI service (see :mod:`apslab.serve.service`), and
``apslab keys`` (see :mod:`apslab.serve.keys`).

FastAPI, uvicorn and prometheus-client are the optional ``serve`` dependencies, imported only
when the command runs, so ``apslab simulate`` never pays for them.
"""

from __future__ import annotations

import argparse
import math

from ..io.errors import InputError
from . import keys

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def register(subparsers) -> None:
    """Add the ``serve`` parser to the ``apslab`` command."""
    parser = subparsers.add_parser(
        "serve", help="run the scheduler as a live HTTP service (OpenAI-compatible /v1, "
                      "POST /infer, GET /metrics)",
        description="Serve SCENARIO over HTTP on the engine its [scheduler] batching names: "
                    "POST /v1/completions and /v1/chat/completions (OpenAI's API, streamed "
                    "token by token), GET /v1/models, POST /infer, GET /metrics, "
                    "GET /metrics/prometheus, GET /healthz, GET /docs. Ctrl+C (or SIGTERM) "
                    "stops taking requests, finishes waiting ones for up to --drain-s seconds "
                    "and answers the rest 503.")
    parser.add_argument("scenario", metavar="SCENARIO.toml")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000,
                        help="TCP port (default 8000; 0 picks a free one and prints it)")
    parser.add_argument("--time-scale", type=float, default=1.0, metavar="S",
                        help="wall seconds per model second (default 1.0; 0.001 runs the "
                             "model a thousand times faster)")
    parser.add_argument("--drain-s", type=float, default=5.0, metavar="SECONDS",
                        help="on shutdown, wall seconds to finish waiting requests before "
                             "answering the rest 503 (default 5)")
    parser.add_argument("--keys", metavar="KEYS.toml", default=None,
                        help="per-tenant API keys (salted hashes; `apslab keys add TENANT "
                             "--keys KEYS.toml` makes one); also read from $APSLAB_API_KEYS. "
                             "Without any, the service runs unauthenticated: the bearer token "
                             "names the tenant")
    parser.add_argument("--model", metavar="NAME", default=None,
                        help="the model id /v1 serves (default: the scenario's [model] name, "
                             "Llama-2-7B)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                        help="uvicorn's log level; 'info' includes one access line per request")
    parser.set_defaults(func=run_serve)
    keys.register(subparsers)


def run_serve(args: argparse.Namespace) -> int:
    if not (math.isfinite(args.time_scale) and args.time_scale > 0):
        raise InputError(f"--time-scale must be a finite number > 0, got {args.time_scale:g}")
    if not (math.isfinite(args.drain_s) and args.drain_s >= 0):
        raise InputError(f"--drain-s must be a finite number >= 0, got {args.drain_s:g}")
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be between 0 and 65535, got {args.port}")
    from ..io.scenario import load_scenario

    if args.model is not None and not args.model.strip():
        raise InputError("--model must be a non-empty name")
    scenario = load_scenario(args.scenario)
    store = keys.KeyStore.configured(args.keys)
    if store is not None:
        store.check_tenants(scenario.tenant_ids())
    try:
        from .service import serve
    except ImportError as exc:
        raise InputError(f"apslab serve needs the 'serve' extras ({exc.name} is missing): "
                         "pip install 'apslab[serve]'") from None
    serve(scenario, host=args.host, port=args.port, time_scale=args.time_scale,
          drain_s=args.drain_s, log_level=args.log_level, keys=store, model_name=args.model)
    return 0
