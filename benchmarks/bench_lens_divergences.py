"""The per-depth lens statistics of the extraction (effdepth.metrics.lens_divergences: KL, top-k
overlap, JSD of one lens's logits against the output) against the textbook formulation, at the
vocabulary sizes of the demo's models, with the error of each against float64.

    python benchmarks/bench_lens_divergences.py --repeat 7

The textbook form recomputes p = exp(log p) per call, takes log m with logaddexp and masks the
0·log 0 terms with torch.where; lens_divergences reads p from final_distribution (once per prompt),
takes log m from m floored at the smallest normal float, and multiplies directly (finite logits:
an underflowed probability times a finite log is 0).  Both compute every term as a local
difference, so they agree to float32 rounding.  The lens's unembedding (the matmul before it) is
timed alongside for scale.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from effdepth.metrics import final_distribution, lens_divergences


def textbook(lens_logits, final, k):
    log_p, _, top_p = final
    log_q = torch.log_softmax(lens_logits.float(), dim=-1)
    q = log_q.exp()
    kl = (q * (log_q - log_p)).sum(-1).clamp_min(0.0)
    top_q = lens_logits.topk(k, dim=-1).indices
    overlap = (top_q.unsqueeze(-1) == top_p.unsqueeze(-2)).any(-1).sum(-1).float() / k
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    p = log_p.exp()
    zero = torch.zeros((), dtype=q.dtype)
    nats = 0.5 * (torch.where(p > 0, p * (log_p - log_m), zero).sum(-1) + torch.where(q > 0, q * (log_q - log_m), zero).sum(-1))
    return kl, overlap, (nats / math.log(2.0)).clamp(0.0, 1.0)


def float64_jsd(lens_logits, final_logits):
    p, q = torch.softmax(final_logits.double(), -1), torch.softmax(lens_logits.double(), -1)
    m = (p + q) / 2
    return 0.5 * (torch.special.xlogy(p, p / m).sum(-1) + torch.special.xlogy(q, q / m).sum(-1)) / math.log(2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=36)
    parser.add_argument("--vocab", type=int, nargs="+", default=[49152, 262144], help="SmolLM2: 49152, Gemma 3: 262144")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.tokens} tokens, top-5, median of {args.repeat}")
    print(
        f"{'V':>7} {'unembed ms':>10} {'textbook ms':>11} {'effdepth ms':>11} {'ratio':>6} "
        f"{'JSD err textbook':>16} {'effdepth':>9}"
    )
    for vocab in args.vocab:
        d = 640
        unembed = torch.randn(vocab, d) / d**0.5
        h = torch.randn(args.tokens, d) * 3
        final_logits = h @ unembed.T
        lens_logits = (h + torch.randn_like(h)) @ unembed.T
        final = final_distribution(final_logits, 5)
        times = {"unembed": [], "textbook": [], "effdepth": []}
        for _ in range(args.repeat):  # alternate, so both see the same load
            for name, run in (
                ("unembed", lambda: h @ unembed.T),
                ("textbook", lambda: textbook(lens_logits, final, 5)),
                ("effdepth", lambda: lens_divergences(lens_logits, final, 5)),
            ):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
        want = float64_jsd(lens_logits, final_logits)
        errors = [(f(lens_logits, final, 5)[2].double() - want).abs().max().item() for f in (textbook, lens_divergences)]
        print(
            f"{vocab:>7} {ms['unembed']:>10.1f} {ms['textbook']:>11.1f} {ms['effdepth']:>11.1f} "
            f"{ms['textbook'] / ms['effdepth']:>6.2f} {errors[0]:>16.1e} {errors[1]:>9.1e}"
        )


if __name__ == "__main__":
    main()
