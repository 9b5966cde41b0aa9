# Figures from aggregated tables, and all.pdf: a title page then every figure in a stable order
# (effdepth.figures.FIGURES: F1–F12, T1, Q1–Q3, further analyses; then one profile page per model).
# One rule per figure, so each has its own report caption; a figure is scheduled only when the
# configured analyses produce its tables.  Q2 is always drawn: without a long-CoT/base pair its page
# says so.  The comparison with the paper is scheduled only when a configured model and task are in
# the paper's table.

from functools import partial

from effdepth.depth import REFERENCE_PATH, effective_depth_inputs, reference_pairs
from effdepth.figures import (
    ED_CAT,
    PROFILE_CATEGORY,
    available_figures,
    figure_context,
    figure_inputs,
    report_options,
    workflow_targets,
)

report: "../report/workflow.rst"


ED_ANALYSES = effective_depth_inputs(ANALYSES)  # also the inputs of rule effective_depth (depth.smk)
ED_CONFIGURED = bool(ED_ANALYSES)
# The paper's published values ship with the workflow (not the working directory, which may be elsewhere).
REFERENCE_FILE = str(Path(workflow.basedir) / REFERENCE_PATH)
REFERENCE_MATCHES = any(
    (m, t) in reference_pairs(REFERENCE_FILE)
    for m in MODELS
    for a in ED_ANALYSES
    for t in analysis_tasks(a)
)
FIGURE_NAMES = available_figures(ANALYSES, reference_matches=REFERENCE_MATCHES)
PROFILE_MODELS = MODELS if ED_CONFIGURED else []
FIGURE_CONTEXT = figure_context(config)


for _name in FIGURE_NAMES:

    rule:
        name:
            f"figure_{_name}"
        input:
            **figure_inputs(_name, ANALYSES, MODELS),
        output:
            pdf=report(f"results/figures/{_name}.pdf", **report_options(_name)),
            svg=f"results/figures/{_name}.svg",
            html=f"results/figures/{_name}.html",
        params:
            figure=_name,
            context=FIGURE_CONTEXT,
        log:
            f"logs/figure/{_name}.log",
        localrule: True
        conda:
            "../../envs/effdepth.yaml"
        script:
            "../scripts/figure.py"


rule model_profile:
    input:
        tables=expand("results/tables/{table}.parquet", table=ED_ANALYSES + ["effective_depth"]),
        tokens=[],
    output:
        pdf=report(
            "results/figures/models/{model}.pdf",
            caption="../report/model_profile.rst",
            category=PROFILE_CATEGORY,
            subcategory="{model}",
            labels={"figure": "profile", "shows": "{model}: every ED curve, threshold and estimate"},
        ),
        svg="results/figures/models/{model}.svg",
        html="results/figures/models/{model}.html",
    params:
        figure=lambda w: f"models/{w.model}",
        context=FIGURE_CONTEXT,
    log:
        "logs/figure/models/{model}.log",
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    script:
        "../scripts/figure.py"


rule all_pdf:
    input:
        expand("results/figures/{figure}.pdf", figure=FIGURE_NAMES),
        expand("results/figures/models/{model}.pdf", model=PROFILE_MODELS),
    output:
        "results/figures/all.pdf",
    params:
        info={
            "name": config.get("name", "experiment"),
            "models": MODELS,
            "tasks": TASKS,
            "variants": {a: o["variant"] for a, o in ANALYSES.items()},
            "effective_depth": ", ".join(f"{k}={v}" for k, v in config["effective_depth"].items()),
            "config_hash": config_hash(),
        },
    log:
        "logs/figure/all.log",
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    script:
        "../scripts/all_pdf.py"


# rule all (Snakefile): the figures, every table, the resolved config.  A partial rather than a def:
# --lint asks for functions to live outside files with rules.
all_targets = partial(workflow_targets, list(ANALYSES))
