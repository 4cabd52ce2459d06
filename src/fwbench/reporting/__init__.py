"""The comparison report: tables from the pipeline's own files, claims with verdicts, figures, HTML + markdown."""
