# Analyses per (model, task).  Forward-only ones read the extraction cache (CPU, seconds);
# interventions load the model again and run on the GPU.


rule forward_table:
    input:
        "results/cache/{model}/{task}/stats.safetensors",
    output:
        "results/tables/{model}/{task}/{analysis}.parquet",
    wildcard_constraints:
        analysis=_alternatives([a for a in FORWARD_ANALYSES if a in ANALYSES]),
    params:
        variant=lambda w: ANALYSES[w.analysis]["variant"],
    log:
        "logs/forward_table/{model}/{task}/{analysis}.log",
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    script:
        "../scripts/forward_table.py"


rule layer_skip:
    input:
        model=model_dir,
        prompts="resources/prompts/{task}.parquet",
    output:
        "results/tables/{model}/{task}/layer_skip.parquet",
    params:
        **_intervention_params("layer_skip"),
    threads: 4
    resources:
        gpu=gpu_count,
        mem_mb=gpu_mem_mb,
        runtime=gpu_runtime,
    log:
        "logs/layer_skip/{model}/{task}.log",
    benchmark:
        "logs/benchmark/layer_skip/{model}/{task}.tsv"
    conda:
        "../../envs/effdepth.yaml"
    script:
        "../scripts/layer_skip.py"


rule residual_erasure:
    input:
        model=model_dir,
        prompts="resources/prompts/{task}.parquet",
        baseline=lambda w: f"results/cache/{w.model}/{ANALYSES['residual_erasure']['baseline_task']}/stats.safetensors",
    output:
        table="results/tables/{model}/{task}/residual_erasure.parquet",
        tokens="results/tables/{model}/{task}/residual_erasure_tokens.parquet",
    params:
        **_intervention_params("residual_erasure"),
    threads: 4
    resources:
        gpu=gpu_count,
        mem_mb=gpu_mem_mb,
        runtime=gpu_runtime,
    log:
        "logs/residual_erasure/{model}/{task}.log",
    benchmark:
        "logs/benchmark/residual_erasure/{model}/{task}.tsv"
    conda:
        "../../envs/effdepth.yaml"
    script:
        "../scripts/residual_erasure.py"


rule integrated_gradients:
    input:
        model=model_dir,
        prompts="resources/prompts/{task}.parquet",
    output:
        table="results/tables/{model}/{task}/integrated_gradients.parquet",
        tokens="results/tables/{model}/{task}/integrated_gradients_tokens.parquet",
    params:
        **_intervention_params("integrated_gradients"),
    threads: 4
    resources:
        gpu=gpu_count,
        mem_mb=gpu_mem_mb,
        runtime=gpu_runtime,
    log:
        "logs/integrated_gradients/{model}/{task}.log",
    benchmark:
        "logs/benchmark/integrated_gradients/{model}/{task}.tsv"
    conda:
        "../../envs/effdepth.yaml"
    script:
        "../scripts/integrated_gradients.py"
