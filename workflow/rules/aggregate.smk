# All models and tasks of one analysis in one table.


rule aggregate:
    input:
        lambda w: table_paths(w.analysis),
    output:
        AGGREGATED,
    log:
        "logs/aggregate/{analysis}.log",
    benchmark:
        "logs/benchmark/aggregate/{analysis}.tsv"
    wildcard_constraints:
        analysis=_alternatives(list(ANALYSES)),
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    params:
        analysis=lambda w: w.analysis,
    script:
        "../scripts/aggregate.py"


rule resolved_config:
    output:
        RESOLVED_CONFIG,
    log:
        "logs/resolved_config.log",
    benchmark:
        "logs/benchmark/resolved_config.tsv"
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    params:
        config=config,
    script:
        "../scripts/resolved_config.py"
