"""Slow, obviously correct references for every analysis: plain loops, batch size 1, one full
forward (and backward) per intervention, hooks registered here independently of
``effdepth.capture``.  The tests compare the fast paths with these on tiny float64 models, and
``benchmarks/`` times the fast paths against them.  Definitions: docs/methods.md.
"""

from __future__ import annotations

import math

import torch

from .adapters import adapter_for


def _first(output):
    """The hidden states of a module output (a bare tensor, or the first element of a tuple)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _replace_first(output, value):
    return (value, *output[1:]) if isinstance(output, tuple) else value


def _layer_input(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


def reference_activations(model, ids):
    """Batch-1 forward with hooks registered here on the adapter's hook targets (layer inputs, a_l,
    m_l; independent of ``effdepth.capture``).  Returns h [L+1] of [T, d], a [L], m [L], logits [T, V]."""
    adapter = adapter_for(model)
    layers = adapter.decoder_layers(model)
    store = {"h": [None] * len(layers), "a": [None] * len(layers), "m": [None] * len(layers)}
    handles = []

    def keep(key, i, scale):
        # clone: some blocks (Falcon) add into a sublayer's output in place; scale: what is added to
        # the stream (Granite multiplies both sublayer outputs)
        return lambda mod, args, out: store[key].__setitem__(i, scale * _first(out)[0].clone())

    for i, layer in enumerate(layers):
        handles.append(
            layer.register_forward_pre_hook(
                lambda mod, args, kw, i=i: store["h"].__setitem__(i, _layer_input(args, kw)[0]), with_kwargs=True
            )
        )
        scale = adapter.multiplier(model, layer)
        handles.append(adapter.attention(layer).register_forward_hook(keep("a", i, scale)))
        handles.append(adapter.mlp_output(layer).register_forward_hook(keep("m", i, scale)))
    try:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0]
    finally:
        for h in handles:
            h.remove()
    h_last = store["h"][-1] + store["a"][-1] + store["m"][-1]
    return store["h"] + [h_last], store["a"], store["m"], logits


def vec_norm(v):
    return math.sqrt(sum(float(x) ** 2 for x in v))


def vec_cos(x, y):
    return sum(float(a) * float(b) for a, b in zip(x, y)) / max(vec_norm(x) * vec_norm(y), 1e-6)


def reference_rc(model, sequences):
    """Token-count mean over all tokens of all prompts, computed token by token; the MLP's reference
    is the residual it reads: h_l + a_l, or h_l in a parallel block (docs/methods.md#parallel-blocks)."""
    parallel = adapter_for(model).parallel
    n_layers = model.config.num_hidden_layers
    sums = {k: [0.0] * n_layers for k in ("rc_attention", "rc_mlp", "rc_layer", "cos_attention", "cos_mlp", "cos_layer")}
    for ids in sequences:
        h, a, m, _ = reference_activations(model, ids)
        for t in range(len(ids)):
            for l in range(n_layers):
                hl, al, ml = h[l][t].tolist(), a[l][t].tolist(), m[l][t].tolist()
                mid = hl if parallel else [x + y for x, y in zip(hl, al)]
                c = [x + y for x, y in zip(al, ml)]
                sums["rc_attention"][l] += vec_norm(al) / max(vec_norm(hl), 1e-6)
                sums["rc_mlp"][l] += vec_norm(ml) / max(vec_norm(mid), 1e-6)
                sums["rc_layer"][l] += vec_norm(c) / max(vec_norm(hl), 1e-6)
                sums["cos_attention"][l] += vec_cos(al, hl)
                sums["cos_mlp"][l] += vec_cos(ml, mid)
                sums["cos_layer"][l] += vec_cos(c, hl)
    tokens = sum(len(s) for s in sequences)
    return {k: [v / tokens for v in vals] for k, vals in sums.items()}


def reference_lens(model, sequences, k):
    n_layers = model.config.num_hidden_layers
    kl = [0.0] * (n_layers + 1)
    overlap = [0.0] * (n_layers + 1)
    for ids in sequences:
        h, _, _, logits = reference_activations(model, ids)
        for l in range(n_layers + 1):
            lens = model.lm_head(model.model.norm(h[l]))
            for t in range(len(ids)):
                q = torch.softmax(lens[t], -1).tolist()
                p = torch.softmax(logits[t], -1).tolist()
                kl[l] += sum(qi * (math.log(qi) - math.log(pi)) for qi, pi in zip(q, p) if qi > 0)
                top_q = set(sorted(range(len(q)), key=lambda i: -q[i])[:k])
                top_p = set(sorted(range(len(p)), key=lambda i: -p[i])[:k])
                overlap[l] += len(top_q & top_p) / k
    tokens = sum(len(s) for s in sequences)
    return [x / tokens for x in kl], [x / tokens for x in overlap]


def forward_with(model, ids, hooks):
    """Full forward, batch 1, with (module, hook, kind) registered — kind "pre" (a forward pre-hook
    with kwargs), "post-kw" (a forward hook with kwargs) or "post"; returns logits [T, V] and every
    layer's (input, output) pair, each [T, d]."""
    layers = adapter_for(model).decoder_layers(model)
    seen = [None] * len(layers)

    def record(mod, args, kwargs, out, i):
        seen[i] = (_layer_input(args, kwargs)[0], _first(out)[0])

    handles = []
    for module, hook, kind in hooks:  # first: a layer's recorded output is the one its hook returns
        if kind == "pre":
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(hook, with_kwargs=kind == "post-kw"))
    handles += [
        layer.register_forward_hook(lambda mod, a, k, o, i=i: record(mod, a, k, o, i), with_kwargs=True)
        for i, layer in enumerate(layers)
    ]
    try:
        logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0]
    finally:
        for h in handles:
            h.remove()
    return logits, seen


def reference_skip(model, ids, positions, kinds, variant="correct"):
    """Layer skip by passing layer s's input through on tokens 1 … t−1 (published: hidden channels
    1 … t−1 of every token), or by zeroing the adapter's a_l / m_l hook target on those tokens; one
    full forward per (kind, layer, position).  Returns future_max/future_mean [K, L, L, P] and
    output_max/output_mean [K, L, P] as ``effdepth.analyses.layer_skip.layer_skip``."""
    adapter = adapter_for(model)
    layers = adapter.decoder_layers(model)
    n_layers = len(layers)
    with torch.no_grad():
        clean_logits, clean = forward_with(model, ids, [])
        clean_c = [o - i for i, o in clean]
        clean_p = torch.softmax(clean_logits, -1)
        out = {
            k: torch.zeros(len(kinds), n_layers, n_layers, len(positions), dtype=torch.float64)
            for k in ("future_max", "future_mean")
        }
        out.update(
            {k: torch.zeros(len(kinds), n_layers, len(positions), dtype=torch.float64) for k in ("output_max", "output_mean")}
        )
        for ki, kind in enumerate(kinds):
            for s in range(n_layers):
                for pi, t in enumerate(positions):
                    if kind == "layer":

                        def hook(mod, args, kwargs, output, t=t):
                            value, given = _first(output).clone(), _layer_input(args, kwargs)
                            if variant == "published":
                                value[0, :, 1:t] = given[0, :, 1:t]
                            else:
                                value[0, 1:t] = given[0, 1:t]
                            return _replace_first(output, value)

                        hooks = [(layers[s], hook, "post-kw")]
                    else:
                        module = adapter.attention(layers[s]) if kind == "attention" else adapter.mlp_output(layers[s])

                        def hook(mod, args, output, t=t):
                            value = _first(output).clone()
                            value[0, 1:t] = 0
                            return _replace_first(output, value)

                        hooks = [(module, hook, "post")]
                    logits, run = forward_with(model, ids, hooks)
                    for j in range(s, n_layers):  # Δ(s, s): the skipped layer's own contribution
                        rel = [
                            float(
                                (clean_c[j][tau] - (run[j][1] - run[j][0])[tau]).norm() / clean_c[j][tau].norm().clamp_min(1e-6)
                            )
                            for tau in range(t, len(ids))
                        ]
                        out["future_max"][ki, s, j, pi] = max(rel)
                        out["future_mean"][ki, s, j, pi] = sum(rel) / len(rel)
                    change = [float((torch.softmax(logits[tau], -1) - clean_p[tau]).norm()) for tau in range(t, len(ids))]
                    out["output_max"][ki, s, pi] = max(change)
                    out["output_mean"][ki, s, pi] = sum(change) / len(change)
    return out


def reference_erasure(model, ids, n_answer, baseline):
    """h_l[t] := baseline[l] by a pre-hook on layer l (on the final norm for l = L), one full forward
    per (l, t); E(l, t) = max over answer-predicting positions of ‖p − p̃‖.  Returns [L+1, T]."""
    adapter = adapter_for(model)
    targets = [*adapter.decoder_layers(model), adapter.norm(model)]
    answer = list(range(len(ids) - n_answer - 1, len(ids) - 1))
    out = torch.zeros(len(targets), len(ids), dtype=torch.float64)
    with torch.no_grad():
        clean_p = torch.softmax(forward_with(model, ids, [])[0][answer], -1)
        for l, module in enumerate(targets):
            for t in range(len(ids)):

                def hook(mod, args, kwargs, l=l, t=t):
                    hidden = _layer_input(args, kwargs).clone()
                    hidden[0, t] = baseline[l]
                    return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

                logits, _ = forward_with(model, ids, [(module, hook, "pre")])
                out[l, t] = (torch.softmax(logits[answer], -1) - clean_p).norm(dim=-1).max()
    return out


def reference_ig(model, ids, n_answer, steps, variant="correct", nodes=None, weights=None):
    """IG of Σ_i p(gold_i | i) w.r.t. each layer's output, one forward and backward per node;
    baseline = token mean (published: each token's mean over the hidden dimension).  Quadrature:
    the left Riemann sum with ``steps`` points (α_k = k/steps, weight 1/steps), or the given
    ``nodes`` α_k ∈ [0, 1] and ``weights`` w_k (sequences of floats of one length; ``steps`` is then
    ignored), each applied in float64 Python arithmetic.  Returns [L, T]."""
    if nodes is None:
        nodes, weights = [k / steps for k in range(steps)], [1.0 / steps] * steps
    nodes, weights = [float(a) for a in nodes], [float(w) for w in weights]
    if len(nodes) != len(weights):
        raise ValueError(f"{len(nodes)} nodes but {len(weights)} weights")
    layers = adapter_for(model).decoder_layers(model)
    answer = list(range(len(ids) - n_answer - 1, len(ids) - 1))
    with torch.no_grad():
        _, clean = forward_with(model, ids, [])
    out = torch.zeros(len(layers), len(ids), dtype=torch.float64)
    for l in range(len(layers)):
        x = clean[l][1].detach()
        x0 = x.mean(-1, keepdim=True).expand_as(x) if variant == "published" else x.mean(0, keepdim=True).expand_as(x)
        total = torch.zeros_like(x, dtype=torch.float64)
        for alpha, weight in zip(nodes, weights):
            point = (x0 + alpha * (x - x0)).clone().requires_grad_(True)
            hooks = [(layers[l], lambda mod, args, output, point=point: _replace_first(output, point.unsqueeze(0)), "post")]
            logits, _ = forward_with(model, ids, hooks)
            target = sum(torch.softmax(logits[i], -1)[ids[i + 1]] for i in answer)
            (grad,) = torch.autograd.grad(target, point)
            total += weight * grad.double()
        out[l] = ((x - x0).double() * total).sum(-1).cpu()
    return out


def reference_deletion(model, ids, n_answer, keep_last=1):
    """Early exit and block deletion after every cut k = 0 … L, one full forward per (mode, cut): the
    deleted layers return their input (a forward hook per layer) — layers k … L−1 for early exit, k …
    L−1−keep_last for block deletion.  Loss and agreement position by position in float64.  Returns the
    dict of ``effdepth.analyses.layer_deletion.layer_deletion``."""
    layers = adapter_for(model).decoder_layers(model)
    n_layers = len(layers)
    answer = list(range(len(ids) - n_answer - 1, len(ids) - 1))

    def identity(mod, args, kwargs, output):
        return _replace_first(output, _layer_input(args, kwargs).clone())

    def scores(logits, full_top=None):
        nll, top = [], []
        for i in answer:
            logp = torch.log_softmax(logits[i].double(), -1)
            nll.append(-float(logp[ids[i + 1]]))
            top.append(int(logits[i].argmax()))
        return nll, top

    with torch.no_grad():
        full_nll, full_top = scores(forward_with(model, ids, [])[0])
        shape = (n_layers + 1, len(answer))
        out = {f"{m}_{w}": torch.zeros(shape, dtype=torch.float64) for m in ("exit", "deletion") for w in ("nll", "top1")}
        for mode, stop in (("exit", n_layers), ("deletion", n_layers - keep_last)):
            for k in range(n_layers + 1):
                hooks = [(layers[l], identity, "post-kw") for l in range(k, stop)]
                nll, top = scores(forward_with(model, ids, hooks)[0])
                out[f"{mode}_nll"][k] = torch.tensor(nll, dtype=torch.float64)
                out[f"{mode}_top1"][k] = torch.tensor([float(a == b) for a, b in zip(top, full_top)], dtype=torch.float64)
    out["full_nll"] = torch.tensor(full_nll, dtype=torch.float64)
    return out
