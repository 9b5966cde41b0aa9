# Models and prompts: fetched or converted once, then frozen on disk.


rule download_model:
    output:
        directory("resources/models/{model}"),
    log:
        "logs/download_model/{model}.log",
    benchmark:
        "logs/benchmark/download_model/{model}.tsv"
    wildcard_constraints:
        model=_alternatives(HUB_MODELS),
    retries: 2
    conda:
        "../../envs/effdepth.yaml"
    params:
        hf_id=lambda w: config["models"][w.model]["hf_id"],
        revision=lambda w: config["models"][w.model]["revision"],
        trust_remote_code=lambda w: config["models"][w.model]["trust_remote_code"],
    script:
        "../scripts/download_model.py"


rule model_fingerprint:
    input:
        "resources/models/{model}",
    output:
        FINGERPRINT,
    log:
        "logs/model_fingerprint/{model}.log",
    benchmark:
        "logs/benchmark/model_fingerprint/{model}.tsv"
    wildcard_constraints:
        model=_alternatives(HUB_MODELS),
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    script:
        "../scripts/model_fingerprint.py"


rule convert_gguf:
    input:
        fingerprint=model_fingerprint,
    output:
        directory("resources/models/{model}"),
    log:
        "logs/convert_gguf/{model}.log",
    benchmark:
        "logs/benchmark/convert_gguf/{model}.tsv"
    wildcard_constraints:
        model=_alternatives(GGUF_MODELS),
    conda:
        "../../envs/effdepth.yaml"
    params:
        gguf=lambda w: config["models"][w.model]["gguf"],
    script:
        "../scripts/convert_gguf.py"


rule prepare_prompts:
    input:
        task_files,
    output:
        PROMPTS,
    log:
        "logs/prepare_prompts/{task}.log",
    benchmark:
        "logs/benchmark/prepare_prompts/{task}.tsv"
    retries: 2
    conda:
        "../../envs/effdepth.yaml"
    params:
        spec=task_options,
    script:
        "../scripts/prepare_prompts.py"
