"""The chart of ``bench.compare_chancy`` (docs/img/compare_chancy.png): one panel per kind
of figure, slotfleet's and Chancy's medians side by side with their ranges.

Runs inside the benchmark virtualenv (matplotlib is installed there, never in slotfleet's
own). Not a test.
"""

from __future__ import annotations

from typing import Any

from bench.common import REPO

CHART = REPO / "docs" / "img" / "compare_chancy.png"


def chart(table: list[dict[str, Any]], facts: dict[str, Any]) -> None:
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    groups = [
        ("Throughput (jobs/s, higher is better)", [e for e in table if "jobs/s" in e["label"]]),
        ("Pickup latency (ms, lower is better)", [e for e in table if "pickup" in e["label"]]),
        ("Worker RSS (MiB, lower is better)", [e for e in table if "RSS" in e["label"]]),
        ("Seconds: start-up and CPU (lower is better)",
         [e for e in table if e["label"].endswith("(s)") or "(s;" in e["label"]]),
        ("DB statements per job (lower is better)",
         [e for e in table if "statements" in e["label"]]),
    ]  # fmt: skip
    fig, axes = plt.subplots(len(groups), 1, figsize=(11, 17))
    colors = {"slotfleet": "#2b6cb0", "chancy": "#dd6b20"}
    for ax, (title, entries) in zip(axes, groups, strict=True):
        labels = [e["label"].split(" (")[0] for e in entries]
        ys = range(len(entries))
        for i, lib in enumerate(("slotfleet", "chancy")):
            meds = [e[lib][0] for e in entries]
            errs = [[max(0.0, e[lib][0] - e[lib][1]) for e in entries],
                    [max(0.0, e[lib][2] - e[lib][0]) for e in entries]]  # fmt: skip
            pos = [y + (i - 0.5) * 0.38 for y in ys]
            for y, e in zip(pos, entries, strict=True):
                value, top = e[lib][0], e[lib][2]
                if value == value:
                    ax.text(max(value, top), y, f" {value:,.{2 if value < 10 else 0}f}",
                            va="center", fontsize=7)  # fmt: skip
            ax.barh(pos, meds, height=0.38, xerr=errs, color=colors[lib], capsize=3,
                    label=lib if lib == "slotfleet" else f"Chancy {facts['chancy']}")  # fmt: skip
        ax.set_yticks(list(ys), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.12)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"slotfleet vs Chancy — {facts['nproc']} CPUs, PostgreSQL "
                 f"{str(facts['postgres']).split()[0]}, {facts['date']}", fontsize=11)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    CHART.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(CHART, dpi=110)
    plt.close(fig)
