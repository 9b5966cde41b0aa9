"""Slow, obviously correct references for every analysis: plain loops, batch size 1, one full
forward (and backward) per intervention, hooks registered here independently of
``effdepth.capture``.  The tests compare the fast paths with these on tiny float64 models, and
``benchmarks/`` times the fast paths against them.  Definitions: docs/methods.md.
"""

from __future__ import annotations

import math

import torch


def reference_activations(model, ids):
    """Batch-1 forward with hooks registered here (independent of effdepth.capture)."""
    layers = model.model.layers
    store = {"h": [None] * len(layers), "a": [None] * len(layers), "m": [None] * len(layers)}
    handles = []
    for i, layer in enumerate(layers):
        handles.append(
            layer.register_forward_pre_hook(
                lambda mod, args, kw, i=i: store["h"].__setitem__(i, (args[0] if args else kw["hidden_states"])[0]),
                with_kwargs=True,
            )
        )
        handles.append(layer.self_attn.register_forward_hook(lambda mod, args, out, i=i: store["a"].__setitem__(i, out[0][0])))
        handles.append(layer.mlp.register_forward_hook(lambda mod, args, out, i=i: store["m"].__setitem__(i, out[0])))
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
    """Token-count mean over all tokens of all prompts, computed token by token."""
    n_layers = model.config.num_hidden_layers
    sums = {k: [0.0] * n_layers for k in ("rc_attention", "rc_mlp", "rc_layer", "cos_attention", "cos_mlp", "cos_layer")}
    for ids in sequences:
        h, a, m, _ = reference_activations(model, ids)
        for t in range(len(ids)):
            for l in range(n_layers):
                hl, al, ml = h[l][t].tolist(), a[l][t].tolist(), m[l][t].tolist()
                mid = [x + y for x, y in zip(hl, al)]
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
    """Full forward, batch 1, with (module, hook, kind) registered; returns logits [T, V] and
    every layer's (input, output) pair."""
    layers = model.model.layers
    seen = [None] * len(layers)
    handles = [
        layer.register_forward_hook(
            lambda mod, args, kw, out, i=i: seen.__setitem__(i, (args[0] if args else kw["hidden_states"], out)), with_kwargs=True
        )
        for i, layer in enumerate(layers)
    ]
    for module, hook, kind in hooks:
        handles.insert(
            0, module.register_forward_pre_hook(hook, with_kwargs=True) if kind == "pre" else module.register_forward_hook(hook)
        )
    try:
        logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0]
    finally:
        for h in handles:
            h.remove()
    return logits, [(i[0], o[0]) for i, o in seen]


def reference_skip(model, ids, positions, kinds, variant="correct"):
    layers = model.model.layers
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

                        def hook(mod, args, output, t=t):
                            new = output.clone()
                            if variant == "published":
                                new[0, :, 1:t] = args[0][0, :, 1:t] if args else None
                            else:
                                new[0, 1:t] = args[0][0, 1:t]
                            return new

                        hooks = [(layers[s], hook, "post")]
                    else:
                        sub = layers[s].self_attn if kind == "attention" else layers[s].mlp

                        def hook(mod, args, output, t=t, kind=kind):
                            if kind == "attention":
                                value = output[0].clone()
                                value[0, 1:t] = 0
                                return (value, *output[1:])
                            value = output.clone()
                            value[0, 1:t] = 0
                            return value

                        hooks = [(sub, hook, "post")]
                    logits, run = forward_with(model, ids, hooks)
                    for j in range(s + 1, n_layers):
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
    layers = model.model.layers
    n_layers = len(layers)
    answer = list(range(len(ids) - n_answer - 1, len(ids) - 1))
    out = torch.zeros(n_layers + 1, len(ids), dtype=torch.float64)
    with torch.no_grad():
        clean_logits, _ = forward_with(model, ids, [])
        for l in range(n_layers + 1):
            for t in range(len(ids)):
                if l < n_layers:

                    def hook(mod, args, kwargs, l=l, t=t):
                        hidden = (args[0] if args else kwargs["hidden_states"]).clone()
                        hidden[0, t] = baseline[l]
                        return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

                    hooks = [(layers[l], hook, "pre")]
                else:

                    def hook(mod, args, output, t=t):
                        new = output.clone()
                        new[0, t] = baseline[n_layers]
                        return new

                    hooks = [(layers[-1], hook, "post")]
                logits, _ = forward_with(model, ids, hooks)
                out[l, t] = max(float((torch.softmax(logits[i], -1) - torch.softmax(clean_logits[i], -1)).norm()) for i in answer)
    return out


def reference_ig(model, ids, n_answer, steps, variant="correct"):
    layers = model.model.layers
    answer = list(range(len(ids) - n_answer - 1, len(ids) - 1))
    with torch.no_grad():
        _, clean = forward_with(model, ids, [])
    out = torch.zeros(len(layers), len(ids), dtype=torch.float64)
    for l in range(len(layers)):
        x = clean[l][1].detach()
        x0 = x.mean(-1, keepdim=True).expand_as(x) if variant == "published" else x.mean(0, keepdim=True).expand_as(x)
        total = torch.zeros_like(x)
        for k in range(steps):
            point = (x0 + (k / steps) * (x - x0)).clone().requires_grad_(True)
            hooks = [(layers[l], lambda mod, args, output, point=point: point.unsqueeze(0), "post")]
            logits, _ = forward_with(model, ids, hooks)
            target = sum(torch.softmax(logits[i], -1)[ids[i + 1]] for i in answer)
            (grad,) = torch.autograd.grad(target, point)
            total += grad
        out[l] = (((x - x0) * total).sum(-1) / steps).cpu()
    return out
