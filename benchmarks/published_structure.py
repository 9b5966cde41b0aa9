"""The published code's structure, written for the benchmarks from its description (not copied).

The paper's public scripts compute every analysis with one full forward of the model per prompt or
per intervention, batch 1, hooks on the decoder layers (through nnsight), and — for integrated
gradients — 16 interpolation points per forward/backward pass.  The functions here do the same
work in the same order, but measure the quantities of ``variant: correct`` (docs/methods.md), so
their results equal effdepth's and the two can be timed against each other:

- ``relative_contribution``: one forward per prompt; per layer the norms and cosines of a_l, m_l and
  a_l + m_l against the residual they are added to, summed over tokens; token-count mean.
- ``logit_lens``: one forward per prompt; per layer the lens logits of every token, a full-vocabulary
  log-softmax, the KL to the output distribution and the top-k overlap through one-hot vocabulary
  masks (a [T, k, V] tensor per layer, as the public script builds it).
- ``layer_skip``: per skip position and skipped layer one full forward (only the whole-layer skip:
  the public script has no attention- or MLP-only skip), every layer's contribution on the future
  tokens and the full-vocabulary output distributions compared with the clean run's.
- ``residual_erasure``: per (layer, token) one full forward; the baseline from one forward per
  baseline prompt.
- ``integrated_gradients``: per layer 256 left-Riemann points in 16 passes of 16 copies of the
  prompt, each a full forward from the token ids with the layer's output replaced, and a backward.

Layer skip and erasure are the slow references of the tests (``effdepth.reference``): they already
have this structure.  Run as a script, this file is one of the public scripts as a whole process
(start, imports, model load, prompts, computation, results file), for ``bench_whole_jobs.py``;
see ``--help``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from effdepth.adapters import adapter_for  # noqa: E402
from effdepth.analyses.integrated_gradients import ig_baseline  # noqa: E402
from effdepth.reference import forward_with, reference_erasure, reference_skip  # noqa: E402
from effdepth.staircase import answer_positions, clean_run  # noqa: E402

IG_STEPS, IG_POINTS_PER_PASS = 256, 16
EPS = 1e-6


def _forward(model, ids: list[int], modules: dict[str, torch.nn.Module] | None = None) -> tuple[torch.Tensor, list, dict]:
    """One batch-1 forward without gradients (``effdepth.reference.forward_with``): logits [T, V], every
    layer's (input, output) pair [T, d], and per name the first output of that module [T, d]."""
    seen = {}

    def recorder(name):
        def hook(mod, args, output):
            seen[name] = (output[0] if isinstance(output, tuple) else output)[0]

        return hook

    with torch.no_grad():
        logits, pairs = forward_with(model, ids, [(m, recorder(name), "post") for name, m in (modules or {}).items()])
    return logits, pairs, seen


def relative_contribution(model, sequences: list[list[int]]) -> dict[str, list[float]]:
    """Token-count means per layer of ‖a_l‖/‖h_l‖, ‖m_l‖/‖h_l + a_l‖, ‖a_l + m_l‖/‖h_l‖ and the matching
    cosines (docs/methods.md#relative-contribution), one forward per prompt.  Sequential pre-norm
    blocks (the benchmark's models).  Returns metric name -> L values."""
    adapter = adapter_for(model)
    layers = adapter.decoder_layers(model)
    modules = {}
    for l, layer in enumerate(layers):
        modules[f"attn:{l}"] = adapter.attention(layer)
        modules[f"mlp:{l}"] = adapter.mlp_output(layer)
    sums = {k: torch.zeros(len(layers), dtype=torch.float64) for k in ("rc_attention", "rc_mlp", "rc_layer")}
    sums.update({k.replace("rc_", "cos_"): torch.zeros(len(layers), dtype=torch.float64) for k in list(sums)})
    tokens = 0
    for ids in sequences:
        _, pairs, seen = _forward(model, ids, modules)
        tokens += len(ids)
        for l, (h_in, h_out) in enumerate(pairs):
            h, a, m = h_in.float(), seen[f"attn:{l}"].float(), seen[f"mlp:{l}"].float()
            mid, c = h + a, h_out.float() - h
            for name, x, ref in (("attention", a, h), ("mlp", m, mid), ("layer", c, h)):
                sums[f"rc_{name}"][l] += (x.norm(dim=-1) / ref.norm(dim=-1).clamp(min=EPS)).sum().double()
                sums[f"cos_{name}"][l] += F.cosine_similarity(x, ref, dim=-1).sum().double()
    return {k: (v / tokens).tolist() for k, v in sums.items()}


def logit_lens(model, sequences: list[list[int]], k: int = 5) -> tuple[list[float], list[float]]:
    """Token-count means per layer l = 0 … L of KL(q_l ‖ p) and |top-k(q_l) ∩ top-k(p)| / k
    (docs/methods.md#logit-lens), one forward per prompt, the overlap through one-hot masks."""
    adapter = adapter_for(model)
    layers = adapter.decoder_layers(model)
    norm, unembed = adapter.norm(model), adapter.unembedding(model)
    n_vocab = unembed.weight.shape[0]
    kl, overlap = torch.zeros(len(layers) + 1, dtype=torch.float64), torch.zeros(len(layers) + 1, dtype=torch.float64)
    tokens = 0
    for ids in sequences:
        logits, pairs, _ = _forward(model, ids)
        tokens += len(ids)
        with torch.no_grad():
            out = logits.float().log_softmax(-1)
            real = F.one_hot(out.topk(k, dim=-1).indices, n_vocab).sum(-2)
            lens = [unembed(norm(h_in)).float() for h_in, _ in pairs] + [logits.float()]
            for l, layer_logits in enumerate(lens):
                q = layer_logits.log_softmax(-1)
                kl[l] += (q.exp() * (q - out)).sum().double()
                mask = F.one_hot(q.topk(k, dim=-1).indices, n_vocab).sum(-2)
                overlap[l] += (mask.unsqueeze(-2).float() @ real.unsqueeze(-1).float() / k).sum().double()
    return (kl / tokens).tolist(), (overlap / tokens).tolist()


def layer_skip(model, ids: list[int], positions: list[int]) -> dict[str, torch.Tensor]:
    """Whole-layer skip, one full forward per (position, skipped layer): ``effdepth.reference.reference_skip``."""
    return reference_skip(model, ids, positions, ("layer",))


def erasure_baseline(model, sequences: list[list[int]]) -> torch.Tensor:
    """b_l = mean of h_l over every token of the prompts, l = 0 … L; one forward per prompt. [L+1, d]."""
    total, count = 0, 0
    for ids in sequences:
        _, pairs, _ = _forward(model, ids)
        total = total + torch.stack([h_in for h_in, _ in pairs] + [pairs[-1][1]]).double().sum(1)
        count += len(ids)
    return (total / count).to(next(model.parameters()).dtype)


def residual_erasure(model, ids: list[int], n_answer: int, baseline: torch.Tensor) -> torch.Tensor:
    """One full forward per (layer, token): ``effdepth.reference.reference_erasure``. [L+1, T]."""
    return reference_erasure(model, ids, n_answer, baseline)


def integrated_gradients(model, ids: list[int], n_answer: int, layers: list[int] | None = None) -> dict[str, torch.Tensor]:
    """IG per layer l (all, or those in ``layers``): 256 left-Riemann points α_k = k/256 in 16 passes of
    16 points; each pass is a full forward of 16 copies of the prompt whose layer-l output a hook
    replaces by x′ + α_k (x − x′), x′ the token mean, then a backward of F (summed gold-answer
    probability) to those states.  Returns ``ig`` [L, T], ``f_input`` [L], ``f_baseline`` [L]
    (float64; zero rows for layers left out), as ``effdepth.analyses.integrated_gradients``."""
    decoder = adapter_for(model).decoder_layers(model)
    if any(not 0 <= layer < len(decoder) for layer in layers or []):
        raise ValueError(f"integrated gradients: layers {layers} outside 0 … {len(decoder) - 1}")
    device = next(model.parameters()).device
    n_tokens = len(ids)
    answer = answer_positions(n_tokens, n_answer).to(device)
    gold = torch.tensor(ids, device=device)[answer + 1]
    h = clean_run(model, ids).h  # layer outputs h_{l+1} of the clean run
    ig = torch.zeros(len(decoder), n_tokens, dtype=torch.float64)
    f_input, f_baseline = torch.zeros(len(decoder), dtype=torch.float64), torch.zeros(len(decoder), dtype=torch.float64)

    def forward_replacing(layer: int, states: torch.Tensor) -> torch.Tensor:
        def hook(module, args, output):
            return (states, *output[1:]) if isinstance(output, tuple) else states

        handle = decoder[layer].register_forward_hook(hook)
        try:
            batch = torch.tensor([ids] * states.shape[0], device=device)
            logits = model(input_ids=batch, use_cache=False).logits[:, answer].double()
        finally:
            handle.remove()
        probs = torch.softmax(logits, -1)
        return probs.gather(-1, gold.view(1, -1, 1).expand(states.shape[0], -1, 1)).squeeze(-1).sum(-1)

    for layer in range(len(decoder)) if layers is None else layers:
        x = h[layer + 1]
        x0 = ig_baseline(x, "correct")
        total = torch.zeros_like(x, dtype=torch.float64)
        for start in range(0, IG_STEPS, IG_POINTS_PER_PASS):
            alpha = torch.arange(start, start + IG_POINTS_PER_PASS, device=device, dtype=x.dtype) / IG_STEPS
            with torch.enable_grad():
                states = (x0 + alpha.view(-1, 1, 1) * (x - x0)).detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(forward_replacing(layer, states).sum(), states)
            total += grad.double().sum(0)
        ig[layer] = ((x - x0).double() * total).sum(-1).cpu() / IG_STEPS
        with torch.no_grad():
            ends = forward_replacing(layer, torch.stack([x, x0]))
        f_input[layer], f_baseline[layer] = ends[0].cpu(), ends[1].cpu()
    return {"ig": ig, "f_input": f_input, "f_baseline": f_baseline}


def main() -> None:
    """One public script as a whole process: load the model as the public code does (from_pretrained,
    no checks), take the prompts effdepth's job takes (same file, same selection), compute, save."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "analysis", choices=["relative_contribution", "logit_lens", "layer_skip", "residual_erasure", "integrated_gradients"]
    )
    parser.add_argument("--model-dir", required=True, type=Path, help="a Hugging Face model directory")
    parser.add_argument("--prompts", required=True, type=Path, help="frozen prompts file (resources/prompts/<task>.parquet)")
    parser.add_argument("--n-prompts", type=int, default=10)
    parser.add_argument("--baseline-prompts", type=Path, help="erasure: the baseline task's prompts file")
    parser.add_argument("--positions-per-prompt", type=int, default=4, help="layer skip: positions per prompt (stride 8, seed 0)")
    parser.add_argument("--layers", type=int, nargs="+", help="integrated gradients: only these layers")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    if not (args.model_dir / "config.json").is_file():
        parser.error(f"--model-dir {args.model_dir}: no config.json (a Hugging Face model directory is needed)")
    for path in (args.prompts, args.baseline_prompts):
        if path is not None and not path.is_file():
            parser.error(f"prompts file not found: {path}")
    if args.analysis == "residual_erasure" and args.baseline_prompts is None:
        parser.error("residual_erasure needs --baseline-prompts (the baseline task's prompts file)")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from effdepth.analyses.layer_skip import skip_positions
    from effdepth.tasks import read_prompts, select_prompts

    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    prompts = select_prompts(read_prompts(args.prompts)[0], tokenizer, args.n_prompts)
    sequences = [p["input_ids"] for p in prompts]
    if args.analysis == "relative_contribution":
        result = relative_contribution(model, sequences)
    elif args.analysis == "logit_lens":
        result = logit_lens(model, sequences)
    elif args.analysis == "layer_skip":
        result = [
            layer_skip(model, ids, skip_positions(len(ids), args.positions_per_prompt, 8, 0, i))
            for i, ids in enumerate(sequences)
        ]
    elif args.analysis == "residual_erasure":
        baseline_prompts = select_prompts(read_prompts(args.baseline_prompts)[0], tokenizer, 10)
        baseline = erasure_baseline(model, [p["input_ids"] for p in baseline_prompts])
        result = [residual_erasure(model, p["input_ids"], p["n_answer"], baseline) for p in prompts]
    else:
        result = [integrated_gradients(model, p["input_ids"], p["n_answer"], args.layers) for p in prompts]
    torch.save(result, args.out)


if __name__ == "__main__":
    main()
