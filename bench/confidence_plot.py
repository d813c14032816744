"""The confidence bench's figure (docs/confidence.png): whether the probability shown for a #1 says what it means,
and which kinds of photo get which probability."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mga.confidence import CONFIDENT
from training.calibration import calibration_error, reliability
from mga.files import atomic_path


def plot_confidence(prob: np.ndarray, correct: np.ndarray, kinds: dict[str, np.ndarray], path: str | Path) -> None:
    """Two panels: how often a #1 is right against the probability the app shows for it (reliability; on the
    diagonal it says what it means), and where each kind of photo's probability falls against the app's threshold
    (`kinds`: label -> which photos, as bench.confidence.photo_kinds gives them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rel, hist) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    bins = reliability(prob, correct)
    rel.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="says what it means")
    rel.plot([b[0] for b in bins], [b[1] for b in bins], marker="o", label="every photo")
    for mean, rate, share in bins:
        rel.annotate(f"{share:.0%}", (mean, rate), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    rel.set(xlabel="probability shown (mean of its bin)", ylabel="share of those #1s that are right",
            title=f"reliability (calibration error {calibration_error(prob, correct):.3f})", xlim=(0, 1),
            ylim=(0, 1.05))
    rel.legend(loc="upper left", fontsize=8)
    edges = np.linspace(0, 1, 21)
    for name, chosen in kinds.items():
        hist.hist(prob[chosen], bins=edges, histtype="step", lw=1.5, density=True, label=f"{name} ({chosen.sum()})")
    hist.axvline(CONFIDENT, color="grey", ls="--", lw=1)
    hist.set(xlabel="probability shown for the #1", ylabel="density", title="who gets which probability")
    hist.legend(fontsize=7, loc="upper center")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
