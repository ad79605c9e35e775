"""``slotfleet crds [--check]``: write (or check) the generated Queue CRD files.

The CRD is generated from the pydantic models (``slotfleet.operator.crd``) into two
checked-in files: ``crds/queues.slotfleet.dev.yaml`` (``kubectl apply -f crds/``) and the
chart's ``charts/slotfleet/templates/crd.yaml``. ``--check`` writes nothing and exits 1
with one line when a file differs from what the models generate (CI runs it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from slotfleet.operator.crd import render_chart_template, render_crd_yaml

#: Repository-relative files and the function that renders each.
OUTPUTS: tuple[tuple[str, Callable[[], str]], ...] = (
    ("crds/queues.slotfleet.dev.yaml", render_crd_yaml),
    ("charts/slotfleet/templates/crd.yaml", render_chart_template),
)


def stale_files(root: Path) -> list[str]:
    """Repository-relative paths whose content differs from what the models generate."""
    stale = []
    for relative, render in OUTPUTS:
        path = root / relative
        if not path.is_file() or path.read_text(encoding="utf-8") != render():
            stale.append(relative)
    return stale


def write_files(root: Path) -> list[str]:
    """Write every generated file under ``root``; return the paths that changed."""
    changed = stale_files(root)
    for relative, render in OUTPUTS:
        if relative in changed:
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(), encoding="utf-8")
    return changed


def run(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if args.check:
        stale = stale_files(root)
        if stale:
            print(
                f"error: {', '.join(stale)} out of date with slotfleet/models/resource.py; "
                "run `slotfleet crds`",
                file=sys.stderr,
            )
            return 1
        return 0
    for relative in write_files(root):
        print(f"wrote {relative}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "crds",
        help="write the Queue CRD generated from the models (crds/ and the chart)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 when the files differ from the models",
    )
    parser.add_argument(
        "--root",
        default=".",
        help="repository root holding crds/ and charts/ (default: the current directory)",
    )
    parser.set_defaults(handler=run)
