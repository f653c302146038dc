"""Cost of wmt's beam search (workloads/wmt/decode_*.py) at eval shapes, on the toy decoder.

The toy (decode.toy_decoder_params: one cached self-attention layer of width --dim and the
--vocab output projection) stands in for the Transformer, so the figures are the search's own
cost (top-k over beam x vocab candidates, the state and cache reorder) plus a small model step;
the real decoder's step adds its layers on top. Every search runs all --max_len positions (no
early exit), so runs are comparable. --step fixed returns the same log-probabilities at every
position and caches nothing: what is left is the search's own cost. --start gives the key/value
cache that many positions to begin with, doubled as the search reaches its end (`cache_axis`);
by default it holds --max_len.

Usage: .venv/bin/python scripts/bench_wmt_decode.py [--batch 128] [--beam 4] [--max_len 64]
    [--vocab 32000] [--dim 64] [--start N] [--step toy|fixed] [--repeats 3]
    [--frameworks pytorch,jax] [--jax_eager]
Prints, per mode, the compile/trace time of the first call and the median and min ms per
position (and the median per source sentence) over --repeats calls; on a shared machine the min
is the steadier figure.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import numpy as np

from algoperf.workloads.wmt import decode


def timed(run, repeats: int) -> tuple[float, float, float]:
    """(seconds of the first call, median and min seconds of the next `repeats`)."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), min(times)


def fixed_step(tokens, cache, t, context):
    """--step fixed: the same log-probabilities (`context`) at every position, nothing cached."""
    return context, cache


def torch_runs(weights, source, args) -> dict:
    import torch

    from algoperf.workloads.wmt import decode_torch as dt

    params = dt.toy_params(weights)
    context = dt.repeat_for_beams(torch.from_numpy(source), args.beam)
    step = functools.partial(dt.toy_step, params)
    rows = args.batch * args.beam
    if args.step == "fixed":
        with torch.no_grad():
            fixed, _ = step(torch.zeros(rows, dtype=torch.int64), dt.toy_cache(params, rows, 1),
                            torch.tensor(0), context)  # fmt: skip
        step, context = fixed_step, fixed

    def run(compile: bool):
        cache = (
            dt.toy_cache(params, rows, args.start or args.max_len)
            if args.step == "toy"
            else {"dummy": torch.zeros(rows, 1)}
        )
        out = dt.beam_search(
            step, cache, context, batch_size=args.batch, beam_size=args.beam,
            max_len=args.max_len, cache_axis=1 if args.start and args.step == "toy" else None,
            early_exit=False, compile=compile,
        )  # fmt: skip
        return out.tokens

    return {
        "pytorch eager": functools.partial(run, False),
        "pytorch compiled": functools.partial(run, True),
    }


def jax_runs(weights, source, args) -> dict:
    import jax
    import jax.numpy as jnp

    from algoperf.workloads.wmt import decode_jax as dj

    params, source = dj.toy_params(weights), jnp.asarray(source)
    rows = args.batch * args.beam

    def search(params, source):
        step, context = (
            functools.partial(dj.toy_step, params),
            dj.repeat_for_beams(source, args.beam),
        )
        if args.step == "fixed":
            context, _ = step(jnp.zeros(rows, jnp.int32), dj.toy_cache(params, rows, 1),
                              jnp.int32(0), context)  # fmt: skip
            step, cache = fixed_step, {"dummy": jnp.zeros((rows, 1))}
        else:
            cache = dj.toy_cache(params, rows, args.start or args.max_len)
        return dj.beam_search(
            step, cache, context, batch_size=args.batch, beam_size=args.beam,
            max_len=args.max_len, cache_axis=1 if args.start and args.step == "toy" else None,
            early_exit=False,
        ).tokens  # fmt: skip

    jitted = jax.jit(search)
    runs = {"jax jit": lambda: jitted(params, source).block_until_ready()}
    if args.jax_eager:

        def eager():
            with jax.disable_jit():
                return search(params, source).block_until_ready()

        runs["jax eager"] = eager
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--beam", type=int, default=decode.BEAM_SIZE)
    parser.add_argument("--max_len", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=32_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--start", type=int, default=None, help="first cache length")
    parser.add_argument(
        "--step", choices=("toy", "fixed"), default="toy",
        help="fixed: the toy's first log-probabilities at every position (the search alone)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frameworks", default="pytorch,jax")
    parser.add_argument("--jax_eager", action="store_true", help="also jax under disable_jit")
    args = parser.parse_args()
    weights = decode.toy_decoder_params(args.vocab, args.dim, args.max_len, seed=0)
    source = np.random.default_rng(0).normal(size=(args.batch, args.dim)).astype(np.float32)
    builders = {"pytorch": torch_runs, "jax": jax_runs}
    print(
        f"batch {args.batch} x beam {args.beam}, {args.max_len} positions, vocab {args.vocab}, "
        f"toy width {args.dim}, cache from {args.start or args.max_len} positions, "
        f"step {args.step}"
    )
    for framework in args.frameworks.split(","):
        for name, run in builders[framework](weights, source, args).items():
            first, median, fastest = timed(run, args.repeats)
            print(
                f"{name:16s} first call {first:5.1f} s  ms/position: median "
                f"{1e3 * median / args.max_len:7.1f}, min {1e3 * fastest / args.max_len:7.1f}  "
                f"ms/sentence (median) {1e3 * median / args.batch:6.1f}"
            )


if __name__ == "__main__":
    main()
