"""Peak memory of an effdepth API call against a plain forward of the same prompts.

    python benchmarks/api_memory.py --model resources/models/SmolLM2-135M-Instruct
    python benchmarks/api_memory.py --model DIR --device cuda      # GPU: torch.cuda.max_memory_allocated

Each measurement runs in its own process (peak RSS only grows within a process): ``load`` loads the
model and tokenizer and does nothing else; ``forward`` adds one plain ``model(input_ids)`` per batch
of the prompts; ``api`` adds ``effdepth.measure`` (checks and the decomposition proof, one extraction
pass, the three forward analyses, the effective-depth table with a 200-resample bootstrap).  An API
that copied the weights would exceed ``load`` by the size of the weights; the extraction's own
working set (activations of one batch, the logit lens of every layer) is what it adds over a plain
forward.  The model is a local Hugging Face directory (the demo converts SmolLM2's GGUF into
``resources/models/SmolLM2-135M-Instruct`` on its first run).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def child(mode: str, model_dir: str, device: str, n_prompts: int) -> dict[str, float]:
    import torch

    sys.path.insert(0, SRC)
    import effdepth
    from effdepth.models import load_model

    net, tokenizer = load_model(model_dir, {"device": device, "dtype": "float32", "verify_decomposition": False})
    spec = {"source": "addition", "digits": 4, "n_prompts": n_prompts}
    weights = sum(p.numel() * p.element_size() for p in net.parameters()) / 2**20
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if mode == "forward":
        subject = effdepth.subject(net, tokenizer, spec, verify=False)
        with torch.inference_mode():
            for start in range(0, len(subject.prompts), 4):
                for p in subject.prompts[start : start + 4]:
                    net(input_ids=torch.tensor([p["input_ids"]], device=net.device))
    elif mode == "api":
        effdepth.measure(net, tokenizer, spec, depth={"bootstrap": 200})
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {"mode": mode, "peak_rss_mib": peak_rss, "gpu_peak_mib": gpu, "weights_mib": weights}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="local Hugging Face model directory")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--n-prompts", type=int, default=8)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not Path(args.model, "config.json").is_file():
        raise SystemExit(f"--model {args.model}: not a Hugging Face model directory (no config.json)")
    if args.child:
        print(json.dumps(child(args.child, args.model, args.device, args.n_prompts)))
        return
    rows = []
    for mode in ("load", "forward", "api"):
        cmd = [sys.executable, __file__, "--model", args.model, "--device", args.device, "--n-prompts", str(args.n_prompts)]
        out = subprocess.run([*cmd, "--child", mode], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    load = rows[0]["peak_rss_mib"]
    print(f"weights: {rows[0]['weights_mib']:.0f} MiB; {args.n_prompts} prompts; device {args.device}")
    print(f"{'mode':8s} {'peak RSS MiB':>13s} {'over load':>10s} {'GPU peak MiB':>13s}")
    for r in rows:
        gpu = f"{r['gpu_peak_mib']:.0f}" if r["gpu_peak_mib"] is not None else "-"
        print(f"{r['mode']:8s} {r['peak_rss_mib']:13.0f} {r['peak_rss_mib'] - load:10.0f} {gpu:>13s}")


if __name__ == "__main__":
    main()
