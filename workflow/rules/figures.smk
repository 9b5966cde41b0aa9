# Figures from aggregated tables, and all.pdf: a title page then every figure in a stable order.

from effdepth.figures import FIGURES, available_figures

FIGURE_NAMES = available_figures(list(ANALYSES))


def figure_tables(wildcards):
    return [f"results/tables/{a}.parquet" for a in FIGURES[wildcards.figure][0]]


rule figure:
    input:
        figure_tables,
    output:
        pdf="results/figures/{figure}.pdf",
        svg="results/figures/{figure}.svg",
        html="results/figures/{figure}.html",
    wildcard_constraints:
        figure=_alternatives(FIGURE_NAMES),
    params:
        options=config["figures"],
    log:
        "logs/figure/{figure}.log",
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    script:
        "../scripts/figure.py"


rule all_pdf:
    input:
        expand("results/figures/{figure}.pdf", figure=FIGURE_NAMES),
    output:
        "results/figures/all.pdf",
    params:
        info={
            "name": config.get("name", "experiment"),
            "models": MODELS,
            "tasks": TASKS,
            "variants": {a: o["variant"] for a, o in ANALYSES.items()},
            "config_hash": config_hash(),
        },
    log:
        "logs/figure/all.log",
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    script:
        "../scripts/all_pdf.py"


def all_targets():
    return [
        "results/figures/all.pdf",
        "results/config.resolved.yaml",
        *expand("results/tables/{analysis}.parquet", analysis=list(ANALYSES)),
    ]
