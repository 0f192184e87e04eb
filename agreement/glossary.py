"""One sentence per statistic and aggregation, said beside each figure (the dashboard, `manage.py compare`).

Plain text with no Django, so every reader of a summary explains it the same way.
"""

from __future__ import annotations

DEFINITIONS: dict[str, str] = {
    "fleiss_kappa": (
        "How much more often workers pick the same category for a unit than chance would give, knowing how "
        "often each category is picked: 1 is perfect agreement, 0 is chance, below 0 worse than chance."
    ),
    "krippendorff_alpha": (
        "One minus the workers' disagreement over the disagreement chance would give, on the categories; "
        "like Fleiss' κ (1 perfect, 0 chance) but made for units with different numbers of answers."
    ),
    "word_agreement": (
        "The share of a unit's workers who typed its most common word (normalised, synonyms merged), "
        "averaged over the units with words from at least two workers."
    ),
    "category_agreement": (
        "The share of units whose human category (the workers' consensus) is Network Dissection's label "
        "mapped onto the same six categories."
    ),
    "cohen_kappa": (
        "Agreement between the human and the dissection category beyond what chance gives when each side "
        "uses its categories as often as it does: 1 is perfect, 0 no better than chance."
    ),
    "concept_match_rate": (
        "The share of units whose most common worker word is Network Dissection's label "
        "(both normalised, synonyms merged)."
    ),
    "concept_match_rate_interpretable": (
        "The consensus word = dissection label share among units whose dissection IoU is above the "
        "interpretability threshold."
    ),
    "concept_match_rate_uninterpretable": (
        "The consensus word = dissection label share among units whose dissection IoU is at most the "
        "interpretability threshold."
    ),
    "mean_precision": (
        "The share of a unit's images that workers kept as fitting their word (they tick the ones that do "
        "not), averaged over workers, then over units."
    ),
    "spearman_iou_precision": (
        "Spearman's rank correlation between a unit's dissection IoU and its image precision: do the units "
        "Network Dissection scores higher also show images that workers find consistent?"
    ),
    "spearman_iou_agreement": (
        "Spearman's rank correlation between a unit's dissection IoU and its word agreement: do the units "
        "Network Dissection scores higher also make workers agree on a word?"
    ),
    "dawid_skene": (
        "Dawid–Skene estimates how reliable each worker is from all their answers and weighs their votes by "
        "it, so a unit's category can differ from its plain majority (a unit's only answer is kept)."
    ),
    "majority": "The category most of a unit's workers picked; a tie goes to the first category in the form.",
    "min_answers": (
        "Units with fewer answers than this are listed apart and take no part in any statistic, plot or "
        "consensus: one answer shows no agreement and a consensus of one is one worker's opinion."
    ),
    "verification": (
        "Workers judge one candidate label at a time without being told where it came from; a unit's label "
        "counts as correct when more than half of its judges say yes (Wilson interval)."
    ),
    "confusion": (
        "Units counted by their human category (rows) and Network Dissection's category (columns); "
        "the diagonal is where both agree."
    ),
    "interval": (
        "A percentile bootstrap interval: the range the statistic takes on most batches resampled, with "
        "replacement, from these units."
    ),
}
"""statistic, aggregation or setting -> one sentence that says what it measures."""
