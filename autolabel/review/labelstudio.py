"""Reviewing in Label Studio instead of review.html: the sample as import tasks (the pseudo-label is
each task's prediction, with its confidence as the score, so the annotator only confirms or
changes it), the labelling config for the project, and an export turned back into review.csv.

In the project an annotation that keeps the proposed class approves it, another class rejects it
with that correction, and the extra choice "none of these" rejects it without one. Tasks with no
(or only cancelled) annotations stay unreviewed.
"""
from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

from autolabel.review.sample import Sample
from autolabel.review.thumbs import thumbnail
from autolabel.review.verdicts import Verdict
from classification.errors import InputError, first_line

CONTROL, OBJECT = "class", "image"   # the Choices and Image tags' names in the labelling config
THUMB_SIDE = 512                     # inlined image size: big enough to judge, small enough to import


def none_choice(classes: list[str]) -> str:
    """The choice that rejects without a correction (never one of the class names)."""
    name = "none of these"
    while name in classes:
        name += " (reject)"
    return name


def tasks(sample: Sample, thumb_side: int = THUMB_SIDE) -> list[dict]:
    """Label Studio import tasks for the sample, in review order (images inlined as data URIs)."""
    out = []
    for n, item in enumerate(sample.items, start=1):
        thumb = thumbnail(item["path"], thumb_side)
        choice = {"from_name": CONTROL, "to_name": OBJECT, "type": "choices", "value": {"choices": [item["label"]]}}
        out.append({"data": {"image": thumb.uri or "", "path": item["path"], "proposed": item["label"],
                             "confidence": item["confidence"], "order": n, "sample": sample.id},
                    "predictions": [{"model_version": f"autolabel {Path(sample.run).name} trial {sample.trial}",
                                     "score": item["confidence"], "result": [choice]}]})
    return out


def labeling_config(classes: list[str]) -> str:
    """The project's labelling interface (Settings > Labeling Interface > Code)."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in [*classes, none_choice(classes)])
    return (f'<View>\n  <Header value="Keep the proposed class, pick the right one, or none of these"/>\n'
            f'  <Text name="proposal" value="$proposed"/>\n  <Image name="{OBJECT}" value="$image"/>\n'
            f'  <Choices name="{CONTROL}" toName="{OBJECT}" choice="single" showInline="true" required="true">\n'
            f"{choices}\n  </Choices>\n</View>\n")


def review_from_export(export: str | Path, sample: Sample) -> list[Verdict]:
    """review.csv rows (in the sample's order) from a Label Studio JSON or JSON-MIN export."""
    export = Path(export)
    try:
        raw = json.loads(export.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"Label Studio export {export} does not exist") from None
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the Label Studio export {export}: {first_line(e)}") from None
    if not isinstance(raw, list):
        raise InputError(f"{export} is not a Label Studio JSON export (a list of tasks)")
    drawn = {it["path"]: it["label"] for it in sample.items}
    chosen: dict[str, str | None] = {}
    for n, task in enumerate(raw, start=1):
        data = task.get("data", task) if isinstance(task, dict) else None  # JSON-MIN is flat
        if not isinstance(data, dict) or "path" not in data:
            raise InputError(f"{export}: task {n} has no data.path; export the project autolabel's "
                             "label_studio.json created")
        if data["path"] not in drawn:
            raise InputError(f"{export}: task {n} ({data['path']}) is not in the drawn sample of "
                             f"{sample.run}: an export of another run's or an older sample's tasks?")
        if data.get("proposed", drawn[data["path"]]) != drawn[data["path"]]:
            raise InputError(f"{export}: task {n} proposes {data['proposed']!r} for {data['path']}, the drawn "
                             f"sample {drawn[data['path']]!r}: an export of another run's or an older sample's tasks?")
        chosen[data["path"]] = _choice(task, export, n)
    return [_verdict(path, label, chosen.get(path), sample.classes, export) for path, label in drawn.items()]


def _choice(task: dict, export: Path, n: int) -> str | None:
    """The class a task's latest kept annotation chose, or None when it has none."""
    if "annotations" not in task:  # JSON-MIN: the control's name holds the choice
        value = task.get(CONTROL)
        return value if isinstance(value, str) and value else None
    kept = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    kept.sort(key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
    for annotation in reversed(kept):
        for result in annotation.get("result") or []:
            if result.get("from_name") == CONTROL and result.get("value", {}).get("choices"):
                return result["value"]["choices"][0]
    if kept:
        raise InputError(f"{export}: task {n}'s annotation has no choice under {CONTROL!r}; "
                         "use the labelling config in label_studio_config.xml")
    return None


def _verdict(path: str, label: str, choice: str | None, classes: list[str], export: Path) -> Verdict:
    if choice is None:
        return Verdict(path, label)
    if choice == label:
        return Verdict(path, label, "approve")
    if choice == none_choice(classes):
        return Verdict(path, label, "reject")
    if choice not in classes:
        raise InputError(f"{export}: {path} was given {choice!r}, not a class of the run; "
                         f"valid: {', '.join(classes)}, {none_choice(classes)}")
    return Verdict(path, label, "reject", choice)
