"""How alike are the candidates, and which of them will merge well.

Prediction space (:mod:`.prediction`) and clustering (:mod:`.cluster`) read
per-item records only; weight space (:mod:`.weights`) reads the registry's
safetensors with numpy; function space (:mod:`.function`) needs the model and
is imported only when a probe set is asked for. Nothing imported here loads
torch, transformers, peft or lm_eval.
"""

from .analyse import FILE, SCHEMA, DiversityOptions, analyse, analyse_run, write_diversity
from .cluster import cluster, cluster_matrix
from .observed import observed_merges, prediction_check
from .predict import check_predictions, mergeability
from .render import dendrogram_svg, heatmap_svg, render_diversity_section

__all__ = ["FILE", "SCHEMA", "DiversityOptions", "analyse", "analyse_run", "check_predictions", "cluster", "cluster_matrix", "dendrogram_svg", "heatmap_svg",
           "mergeability", "observed_merges", "prediction_check", "render_diversity_section", "write_diversity"]
