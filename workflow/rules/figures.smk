# Figures from aggregated tables, and all.pdf: a title page then every figure in a stable order
# (effdepth.figures.FIGURES: F1–F12, T1, Q1–Q3, further analyses; then one profile page per model).
# One rule per figure, so each has its own report caption; a figure is scheduled only when the
# configured analyses produce its tables (effdepth.figures.available_figures).  Q2 is always drawn:
# without a long-CoT/base pair its page says so.  The comparison with the paper is scheduled only
# when a configured model and task are in the paper's table.

from effdepth.figures import (
    available_figures,
    report_options,
)


report: "../report/workflow.rst"


FIGURE_NAMES = available_figures(ANALYSES, reference_matches=REFERENCE_MATCHES)
PROFILE_MODELS = MODELS if ED_CONFIGURED else []
for _name in FIGURE_NAMES:

    rule:
        name:
            f"figure_{_name}"
        input:
            **figure_inputs(_name),
        output:
            pdf=report(
                FIGURE.format(figure=_name, ext="pdf"),
                caption=CAPTION.format(name=_name),
                **report_options(_name),
            ),
            svg=FIGURE.format(figure=_name, ext="svg"),
            html=FIGURE.format(figure=_name, ext="html"),
        log:
            f"logs/figure/{_name}.log",
        benchmark:
            f"logs/benchmark/figure/{_name}.tsv"
        localrule: True
        conda:
            "../../envs/effdepth.yaml"
        params:
            figure=_name,
            context=FIGURE_CONTEXT,
        script:
            "../scripts/figure.py"


rule model_profile:
    input:
        tables=[TABLE_FILES[t] for t in (*ED_CONFIGURED, "effective_depth")],
        tokens=[],
    output:
        pdf=report(
            PROFILE.format(model="{model}", ext="pdf"),
            caption=CAPTION.format(name="model_profile"),
            category=PROFILE_CATEGORY,
            subcategory="{model}",
            labels={"figure": "profile", "shows": "{model}: every ED curve, threshold and estimate"},
        ),
        svg=PROFILE.format(model="{model}", ext="svg"),
        html=PROFILE.format(model="{model}", ext="html"),
    log:
        "logs/figure/models/{model}.log",
    benchmark:
        "logs/benchmark/figure/models/{model}.tsv"
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    params:
        figure=lambda w: f"models/{w.model}",
        context=FIGURE_CONTEXT,
    script:
        "../scripts/figure.py"


rule all_pdf:
    input:
        [FIGURE.format(figure=f, ext="pdf") for f in FIGURE_NAMES],
        [PROFILE.format(model=m, ext="pdf") for m in PROFILE_MODELS],
    output:
        ALL_PDF,
    log:
        "logs/figure/all.log",
    benchmark:
        "logs/benchmark/figure/all.tsv"
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    params:
        info={
            "name": config.get("name", "experiment"),
            "models": MODELS,
            "tasks": TASKS,
            "variants": {a: "+".join(o["variants"]) for a, o in ANALYSES.items()},
            "effective_depth": ", ".join(f"{k}={v}" for k, v in config["effective_depth"].items()),
            "config_hash": config_hash(),
        },
    script:
        "../scripts/all_pdf.py"
