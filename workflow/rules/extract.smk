# One forward pass per (model, task) capturing what every forward-only analysis needs.


rule extract:
    input:
        model=model_dir,
        prompts="resources/prompts/{task}.parquet",
    output:
        "results/cache/{model}/{task}/stats.safetensors",
    params:
        entry=lambda w: config["models"][w.model],
        task_spec=lambda w: config["tasks"][w.task],
        batch_size=config["extraction"]["batch_size"],
        max_batch_tokens=config["extraction"]["max_batch_tokens"],
        store_activations=config["extraction"]["store_activations"],
        top_k=ANALYSES.get("logit_lens", {}).get("top_k", 5),
    threads: 4
    resources:
        gpu=gpu_count,
        mem_mb=gpu_mem_mb,
        runtime=gpu_runtime,
    log:
        "logs/extract/{model}/{task}.log",
    benchmark:
        "logs/benchmark/extract/{model}/{task}.tsv"
    conda:
        "../../envs/effdepth.yaml"
    script:
        "../scripts/extract.py"
