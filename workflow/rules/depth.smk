# Effective depth with bootstrap intervals, the threshold sweep, and the comparison with the paper's
# published values (resources/reference/, part of the repository).  The comparison table is always
# written; it is empty (with its columns) when no configured model and task is in the paper's table.


rule effective_depth:
    input:
        tables=expand(AGGREGATED, analysis=ED_CONFIGURED),
        reference=REFERENCE_FILE,
    output:
        table=ED_TABLES["table"],
        csv=report(
            ED_TABLES["csv"],
            caption=CAPTION.format(name="effective_depth"),
            category=ED_CAT,
            subcategory="tables",
            labels={"figure": "table", "shows": "effective depth with 95 % intervals"},
        ),
        sweep=ED_TABLES["sweep"],
        reference=ED_TABLES["reference"],
        reference_csv=report(
            ED_TABLES["reference_csv"],
            caption=CAPTION.format(name="effective_depth_reference"),
            category=ED_CAT,
            subcategory="tables",
            labels={"figure": "table", "shows": "comparison with the published values"},
        ),
    log:
        "logs/effective_depth.log",
    benchmark:
        "logs/benchmark/effective_depth.tsv"
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    params:
        options=config["effective_depth"],
    script:
        "../scripts/effective_depth.py"


# The errata of the published code (effdepth.errata): scheduled when an analysis runs under several
# variants; reads only tables.
rule errata:
    input:
        effective_depth=ED_TABLES["table"],
        maps=[AGGREGATED.format(analysis=a) for a in ERRATA_MAPS],
    output:
        table=ERRATA["table"],
        csv=report(
            ERRATA["csv"],
            caption=CAPTION.format(name="errata_table"),
            category=ED_CAT,
            subcategory="tables",
            labels={"figure": "table", "shows": "errata: both variants of every estimate"},
        ),
        questions_table=ERRATA["questions_table"],
        questions=ERRATA["questions"],
    log:
        "logs/errata.log",
    benchmark:
        "logs/benchmark/errata.tsv"
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    params:
        models=FIGURE_CONTEXT["models"],
        tasks=FIGURE_CONTEXT["tasks"],
    script:
        "../scripts/errata.py"
