"""Zhou, Xie & Tian's experiments (R18+FAML, FGA, T2V), as chapter 5 runs them.

What the notebook uses: the parameters (:class:`Settings`), the run (:func:`run`: every
network as a stored job, reused when stored; :mod:`.jobs` trains them, :mod:`.protocol`
plans them), the readings (:mod:`.tables` of networks, :mod:`.voting` of the decision
rules, :mod:`.mechanism` of the mechanism regime, :mod:`.saliency` of Fig. 5 and 8), and the
claims, the paper-vs-book values and the prose's numbers and sentences (:mod:`.claims`).
"""
from fernb.studies.faml.claims import claims, describe, elapsed, highlights, measured
from fernb.studies.faml.mechanism import (disagreements, mechanism_table, mechanism_test_table,
                                          mechanism_tests, plot_confidence)
from fernb.studies.faml.protocol import (CE, CONTROL, DEFAULT, FGA, LSR, MECHANISM, Plan,
                                         Results, load, plan, run)
from fernb.studies.faml.saliency import (evidence, evidence_summary, example_images,
                                         plot_confusions, saliency, saliency_grid)
from fernb.studies.faml.settings import PROSE_NUMBERS, TABLE6_BACKBONES, Settings
from fernb.studies.faml.tables import (TABLE3_CLASS_COLUMN, TABLE3_CLASSES, TABLE3_LOGITS,
                                       ablation, ablation_tests, architectures,
                                       comparison_table, fga_lineage, histories,
                                       learning_checks, phase_table, rank_distribution, table3,
                                       table3_rules)
from fernb.studies.faml.voting import by_networks, plot_gains, plot_sweep, sweep, table6, ties

__all__ = [
    "CE", "CONTROL", "DEFAULT", "FGA", "LSR", "MECHANISM", "PROSE_NUMBERS", "Plan", "Results",
    "Settings", "TABLE3_CLASSES", "TABLE3_CLASS_COLUMN", "TABLE3_LOGITS", "TABLE6_BACKBONES",
    "ablation", "ablation_tests", "architectures", "by_networks", "claims",
    "comparison_table", "describe", "disagreements", "elapsed", "evidence",
    "evidence_summary", "example_images", "fga_lineage", "highlights", "histories",
    "learning_checks", "load", "measured", "mechanism_table", "mechanism_test_table",
    "mechanism_tests", "phase_table", "plan", "plot_confidence", "plot_confusions",
    "plot_gains", "plot_sweep", "rank_distribution", "run", "saliency", "saliency_grid",
    "sweep", "table3", "table3_rules", "table6", "ties",
]
