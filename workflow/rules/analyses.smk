# Analyses per (model, task), one generic rule per kind (effdepth.analyses.REGISTRY).  Forward-only
# analyses read the extraction cache (CPU, seconds); interventions load the model and run on the GPU.


rule forward_table:
    input:
        CACHE,
    output:
        TABLE,
    log:
        "logs/forward_table/{model}/{task}/{analysis}.log",
    wildcard_constraints:
        analysis=_alternatives([a for a in FORWARD_ANALYSES if a in ANALYSES]),
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    params:
        variant=lambda w: ANALYSES[w.analysis]["variant"],
    script:
        "../scripts/forward_table.py"


rule intervention:
    input:
        unpack(intervention_inputs),
    output:
        table=TABLE,
        tokens=TOKENS,
    log:
        "logs/{analysis}/{model}/{task}.log",
    benchmark:
        "logs/benchmark/{analysis}/{model}/{task}.tsv"
    wildcard_constraints:
        analysis=_alternatives([a for a in INTERVENTION_ANALYSES if a in ANALYSES]),
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
        options=analysis_options,
    script:
        "../scripts/intervention.py"
