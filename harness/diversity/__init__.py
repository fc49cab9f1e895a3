"""How alike are the candidates, and which of them will merge well.

Prediction space (:mod:`.prediction_space`) and clustering (:mod:`.cluster`) read
per-item records only; weight space (:mod:`.weight_space`) reads the registry's
safetensors with numpy (:mod:`harness.registry.lora`); function space
(:mod:`.function_space`) needs the model and is imported only when a probe set
is asked for. Mergeability (:mod:`.mergeability`) predicts which pairs merge
well, and :mod:`.merge_outcomes` checks it against the merges the runs hold. Nothing imported here loads
torch, transformers, peft or lm_eval.
"""

from .analyse import FILE, SCHEMA, DiversityOptions, analyse, analyse_run, write_diversity
from .cluster import cluster, cluster_matrix
from .merge_outcomes import observed_merges, prediction_check
from .mergeability import check_predictions, predict_mergeability
from .render import dendrogram_svg, heatmap_svg, render_diversity_section

__all__ = ["FILE", "SCHEMA", "DiversityOptions", "analyse", "analyse_run", "check_predictions", "cluster", "cluster_matrix", "dendrogram_svg", "heatmap_svg",
           "observed_merges", "predict_mergeability", "prediction_check", "render_diversity_section", "write_diversity"]
