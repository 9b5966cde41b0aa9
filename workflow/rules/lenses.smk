# Tuned lenses (docs/methods.md#lenses): one training job per model whose lens is not given in its
# entry, on the configured corpus and never on the prompts of the tasks it is evaluated on.  The
# extraction of those tasks reads the lens in the same pass as the logit lens (rule extract).


rule train_lens:
    input:
        model=model_dir,
        fingerprint=model_fingerprint,
        evaluation=expand(PROMPTS, task=LENS_TASKS),
    output:
        lens=LENS,
        folder=directory(LENS_FOLDER),
        heldout=LENS_HELDOUT,
    log:
        "logs/train_lens/{model}.log",
    benchmark:
        "logs/benchmark/train_lens/{model}.tsv"
    wildcard_constraints:
        model=_alternatives(TRAINED_LENS_MODELS),
    conda:
        "../../envs/effdepth.yaml"
    threads: 4
    resources:
        gpu=gpu_count,
        mem_mb=gpu_mem_mb,
        runtime=lens_runtime,
    params:
        model_options=model_options,
        options=lens_training_options,
    script:
        "../scripts/train_lens.py"


rule lens_heldout:
    input:
        expand(LENS_HELDOUT, model=TRAINED_LENS_MODELS),
    output:
        LENS_HELDOUT_ALL,
    log:
        "logs/lens_heldout.log",
    benchmark:
        "logs/benchmark/lens_heldout.tsv"
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    script:
        "../scripts/concat_tables.py"
