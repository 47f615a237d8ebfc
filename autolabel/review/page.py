"""review.html: one self-contained page for reviewing a sample. The page, its style and script are
package files (assets/); the sample and its thumbnails go inline as one JSON block, so the file
works from a file:// URL with no network and no server, and can be mailed to a reviewer."""
from __future__ import annotations

import html
import json
import re
from importlib import resources
from pathlib import Path

from autolabel.review.sample import Sample
from autolabel.review.thumbs import thumbnail
from autolabel.review.verdicts import Verdict

THUMB_SIDE = 192   # thumbnail pixels a side; cards show them at about 160
SMALL_SIDE = 96    # thumbnails smaller than this are scaled up with sharp pixels (CIFAR's 32 px)


def asset(name: str) -> str:
    return resources.files("autolabel.review").joinpath("assets", name).read_text(encoding="utf-8")


def page_items(sample: Sample, rows: list[Verdict], thumb_side: int = THUMB_SIDE) -> list[dict]:
    """The page's items: the sample's, in review order, with thumbnails and any verdict given."""
    out = []
    for item, row in zip(sample.items, rows):
        thumb = thumbnail(item["path"], thumb_side)
        out.append({"path": item["path"], "name": Path(item["path"]).name, "label": item["label"],
                    "confidence": item["confidence"], "thumb": thumb.uri, "small": 0 < thumb.side < SMALL_SIDE,
                    "problem": thumb.problem, "verdict": row.verdict, "correct": row.correct_label})
    return out


def render_page(sample: Sample, rows: list[Verdict]) -> str:
    """The HTML of review.html for `sample`, pre-filled with the verdicts in `rows`."""
    run = Path(sample.run).name
    how = f"{sample.size} per class" if sample.per_class else f"{len(sample.items)} drawn"
    data = {"sample_id": sample.id, "title": f"Review: {run}, trial {sample.trial}",
            "subtitle": f"Scope: {sample.scope} · {sum(sample.population.values())} labels, {how} "
                        f"at random (seed {sample.seed})",
            "classes": sample.classes, "items": page_items(sample, rows)}
    # no "<" at all inside the script element: "</script" or "<!--" in a path or class name would end it
    block = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
    parts = {"TITLE": html.escape(data["title"]), "CSS": asset("review.css"), "JS": asset("review.js"), "DATA": block}
    # one pass, so no inserted text (a run name, a path) is ever read as a placeholder
    return re.sub(r"/\*(TITLE|CSS|JS|DATA)\*/", lambda m: parts[m.group(1)], asset("review.html"))
