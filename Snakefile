# fwbench: TensorFlow vs PyTorch, measured. See README.md.
from snakemake.utils import min_version

min_version("9.0")


include: "rules/common.smk"
include: "rules/tracking.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/bench.smk"


localrules:
    all,
    download,
    report,


rule all:
    input:
        REPORT_HTML,
        REPORT_MD,
        BENCH_RESULTS,
    default_target: True
