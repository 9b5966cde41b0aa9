# Analyses per (model, task), one generic rule per kind (effdepth.analyses.REGISTRY).  The forward-only
# analyses of a (model, task) come out of one CPU job that reads the extraction cache without torch;
# interventions load the model and run on the GPU, one job per analysis.


rule forward_tables:
    input:
        CACHE,
    output:
        FORWARD_TABLES,
    log:
        "logs/forward_tables/{model}/{task}.log",
    benchmark:
        "logs/benchmark/forward_tables/{model}/{task}.tsv"
    wildcard_constraints:
        task=_alternatives(FORWARD_TASKS),
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    params:
        variants=forward_variants,
        options=forward_options,
    script:
        "../scripts/forward_tables.py"


rule intervention:
    input:
        unpack(intervention_inputs),
    output:
        table=TABLE,
        tokens=TOKENS,
    log:
        "logs/{analysis}/{model}/{task}.{variant}.log",
    benchmark:
        "logs/benchmark/{analysis}/{model}/{task}.{variant}.tsv"
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
