# One forward pass per (model, task) capturing what every forward-only analysis needs.


rule extract:
    input:
        model=model_dir,
        fingerprint=model_fingerprint,
        prompts=PROMPTS,
        lens=lens_input,
    output:
        CACHE,
    log:
        "logs/extract/{model}/{task}.log",
    benchmark:
        "logs/benchmark/extract/{model}/{task}.tsv"
    conda:
        "../../envs/effdepth.yaml"
    threads: 4
    resources:
        gpu=gpu_count,
        mem_mb=gpu_mem_mb,
        runtime=gpu_runtime,
    params:
        model_options=model_options,
        prompt_options=prompt_options,
        options=extraction_options(),
    script:
        "../scripts/extract.py"
