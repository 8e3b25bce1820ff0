"""``make eval-cdnow``: the churn model against BG/NBD on the CDNOW split of Fader, Hardie and Lee (2005).

Fetches the CDNOW files (the ``lifetimes`` wheel from PyPI, data files only), imports weeks 1-39 of the
sample into a fresh data root, runs the refresh as of 1997-09-30T23:59:59Z and prints the ROC-AUC of
``churn_probability`` for "buys in weeks 40-78" next to recency only, frequency only and BG/NBD.

    python bench/eval_cdnow.py [--work-dir build/eval-cdnow] [--dataset sample|master] [--no-compare] [--min-auc 0.775]

Exits 1 when the churn model's AUC is below ``--min-auc`` (default: the issue's acceptance, 0.775, for the
sample; no floor for the master file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seg_assets.churn.evaluate import run_eval_cdnow  # noqa: E402

ACCEPTANCE_AUC = 0.775


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("build/eval-cdnow"), help="data root parent (work-dir/data is recreated)")
    parser.add_argument("--cdnow-dir", type=Path, default=None, help="where the CDNOW files are kept (default work-dir/cdnow)")
    parser.add_argument("--dataset", choices=("sample", "master"), default="sample")
    parser.add_argument("--no-compare", action="store_true", help="skip training each model kind separately")
    parser.add_argument("--min-auc", type=float, default=None, help="fail below this AUC (default 0.775 on the sample)")
    args = parser.parse_args(argv)
    result = run_eval_cdnow(args.work_dir, cdnow_dir=args.cdnow_dir, dataset=args.dataset, compare=not args.no_compare)
    floor = args.min_auc if args.min_auc is not None else (ACCEPTANCE_AUC if args.dataset == "sample" else None)
    if floor is not None and (result.churn_auc or 0.0) < floor:
        print(f"FAILED: churn_probability AUC {result.churn_auc:.4f} < {floor}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
