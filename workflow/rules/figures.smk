# Figures from aggregated tables, and all.pdf: a title page then every figure in a stable order
# (effdepth.figures.FIGURES: F1–F12, T1, Q1–Q3, further analyses; then one profile page per model).
# One job renders every figure, the profiles and all.pdf in one process (effdepth.figures.render_figures):
# a job per figure spent most of a small run starting Python and importing altair.  Each figure is a
# named output with its own report caption; a figure is planned only when the configured analyses
# produce its tables (effdepth.figures.available_figures).  Q2 is always drawn: without a
# long-CoT/base pair its page says so.  The comparison with the paper is planned only when a
# configured model and task are in the paper's table.  Figures are written as PDF, and also as SVG
# and self-contained HTML when `figures.formats` asks for them.

from effdepth.figures import (
    available_figures,
    output_key,
    report_options,
)


report: "../report/workflow.rst"


FIGURE_NAMES = available_figures(ANALYSES, reference_matches=REFERENCE_MATCHES)
PROFILE_MODELS = MODELS if ED_CONFIGURED else []
FIGURE_FORMATS = [f for f in (config.get("figures") or {}).get("formats", ["pdf"]) if f != "pdf"]


def figures_inputs():
    """Every table a planned figure declares, named by table, and the token tables of the analyses
    that label heatmap axes (``tokens_<analysis>``); the profiles read the effective-depth inputs."""
    names = {t for f in FIGURE_NAMES for t in FIGURE_BY_NAME[f].tables}
    if PROFILE_MODELS:
        names |= {*ED_CONFIGURED, "effective_depth"}
    inputs = {t: TABLE_FILES[t] for t in sorted(names)}
    for analysis in sorted({FIGURE_BY_NAME[f].tokens for f in FIGURE_NAMES} - {None}):
        inputs[f"tokens_{analysis}"] = token_paths(analysis)
    return inputs


def figures_outputs():
    """all.pdf and, per figure and profile, its PDF (with its report caption) and the other formats asked for."""
    outputs = {"all": ALL_PDF}
    for name in FIGURE_NAMES:
        outputs[name] = report(FIGURE.format(figure=name, ext="pdf"), caption=CAPTION.format(name=name), **report_options(name))
        outputs |= {output_key(name, ext): FIGURE.format(figure=name, ext=ext) for ext in FIGURE_FORMATS}
    for model in PROFILE_MODELS:
        outputs[output_key("", model=model)] = report(
            PROFILE.format(model=model, ext="pdf"),
            caption=CAPTION.format(name="model_profile"),
            category=PROFILE_CATEGORY,
            subcategory=model,
            labels={"figure": "profile", "shows": f"{model}: every ED curve, threshold and estimate"},
        )
        outputs |= {output_key("", ext, model): PROFILE.format(model=model, ext=ext) for ext in FIGURE_FORMATS}
    return outputs


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


# A finished run ends by saying what it found: where all.pdf and the effective-depth table are, and
# the headline estimates per model × task with their intervals (effdepth.figures.console).
onsuccess:
    from effdepth.figures.console import run_summary

    for _line in run_summary(
        ALL_PDF,
        ED_TABLES["csv"] if ED_CONFIGURED else None,
        ED_TABLES["table"] if ED_CONFIGURED else None,
        FIGURE_CONTEXT,
    ):
        _logger.info(_line)
