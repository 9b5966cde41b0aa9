# Effective depth with bootstrap intervals, the threshold sweep, and the comparison with the paper's
# published values (resources/reference/, part of the repository).  The comparison table is always
# written; it is empty (with its columns) when no configured model and task is in the paper's table.
# ED_ANALYSES, REFERENCE_FILE and ED_CAT come from figures.smk (included before this file).


rule effective_depth:
    input:
        tables=expand("results/tables/{analysis}.parquet", analysis=ED_ANALYSES),
        reference=REFERENCE_FILE,
    output:
        table="results/tables/effective_depth.parquet",
        csv=report(
            "results/tables/effective_depth.csv",
            caption="../report/effective_depth.rst",
            category=ED_CAT,
            subcategory="tables",
            labels={"figure": "table", "shows": "effective depth with 95 % intervals"},
        ),
        sweep="results/tables/effective_depth_sweep.parquet",
        reference="results/tables/effective_depth_reference.parquet",
        reference_csv=report(
            "results/tables/effective_depth_reference.csv",
            caption="../report/effective_depth_reference.rst",
            category=ED_CAT,
            subcategory="tables",
            labels={"figure": "table", "shows": "comparison with the published values"},
        ),
    params:
        options=config["effective_depth"],
    log:
        "logs/effective_depth.log",
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    script:
        "../scripts/effective_depth.py"
