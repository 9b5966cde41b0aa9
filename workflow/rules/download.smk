# Models and prompts: fetched or converted once, then frozen on disk.


rule download_model:
    output:
        directory("resources/models/{model}"),
    wildcard_constraints:
        model=_alternatives(HUB_MODELS),
    params:
        hf_id=lambda w: config["models"][w.model]["hf_id"],
        revision=lambda w: config["models"][w.model]["revision"],
        trust_remote_code=lambda w: config["models"][w.model]["trust_remote_code"],
    log:
        "logs/download_model/{model}.log",
    retries: 2
    conda:
        "../../envs/effdepth.yaml"
    script:
        "../scripts/download_model.py"


rule model_fingerprint:
    input:
        "resources/models/{model}",
    output:
        FINGERPRINT,
    wildcard_constraints:
        model=_alternatives(HUB_MODELS),
    log:
        "logs/model_fingerprint/{model}.log",
    localrule: True
    conda:
        "../../envs/effdepth.yaml"
    script:
        "../scripts/model_fingerprint.py"


rule convert_gguf:
    input:
        fingerprint=FINGERPRINT,
    output:
        directory("resources/models/{model}"),
    wildcard_constraints:
        model=_alternatives(GGUF_MODELS),
    params:
        gguf=lambda w: config["models"][w.model]["gguf"],
    log:
        "logs/convert_gguf/{model}.log",
    conda:
        "../../envs/effdepth.yaml"
    script:
        "../scripts/convert_gguf.py"


rule prepare_prompts:
    input:
        task_files,
    output:
        PROMPTS,
    params:
        spec=task_options,
    log:
        "logs/prepare_prompts/{task}.log",
    retries: 2
    conda:
        "../../envs/effdepth.yaml"
    script:
        "../scripts/prepare_prompts.py"
