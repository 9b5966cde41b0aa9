# Figures from aggregated tables, and all.pdf: a title page then every figure in a stable order
# (effdepth.figures.FIGURES: F1–F12, T1, Q1–Q3, further analyses; then one profile page per model).
# One job renders every figure, the profiles and all.pdf in one process (effdepth.figures.render_figures):
# a job per figure spent most of a small run starting Python and importing altair.  Each figure is a
# named output with its own report caption; a figure is planned only when the configured analyses
# produce its tables (effdepth.figures.available_figures).  Q2 is always drawn: without a
# long-CoT/base pair its page says so.  The comparison with the paper is planned only when a
# configured model and task are in the paper's table.  Figures are written as PDF, and also as SVG
# and self-contained HTML when `figures.formats` asks for them.  The figures, their inputs and outputs:
# FIGURE_NAMES, figures_inputs() and figures_outputs() in common.smk.


report: "../report/workflow.rst"


rule figures:
    input:
        **figures_inputs(),
    output:
        **figures_outputs(),
    log:
        "logs/figures.log",
    benchmark:
        "logs/benchmark/figures.tsv"
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    params:
        figures=FIGURE_NAMES,
        models=PROFILE_MODELS,
        context=FIGURE_CONTEXT,
        info={
            "name": config.get("name", "experiment"),
            "models": MODELS,
            "tasks": TASKS,
            "variants": {a: "+".join(o["variants"]) for a, o in ANALYSES.items()},
            "effective_depth": ", ".join(f"{k}={v}" for k, v in config["effective_depth"].items()),
            "config_hash": config_hash(),
        },
    script:
        "../scripts/figures.py"
